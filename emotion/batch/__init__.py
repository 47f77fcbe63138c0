"""Bulk analysis: a folder of any size to one Parquet file, on this machine or on a Ray cluster.

    python -m emotion.batch SOURCE --out FILE.parquet [--engine local|ray] [--model M] [--batch-size N]

Output and resuming: finished images are committed as whole part files (written to a temporary name, then
renamed) in ``FILE.parquet.parts/``; when every image is done they are assembled into the single file
``FILE.parquet`` (``pyarrow.parquet.read_table`` gives all rows) and the folder is removed. A re-run of
the same command skips every path already in the parts or in FILE.parquet, so an interrupted run resumes
without duplicates. See emotion.batch.store.

Modules: sources (what to read), analyze (a chunk of paths -> rows, via Pipeline.analyze_many), rows (the
schema), store (atomic part files, resume, the final file), local and ray_engine (the two engines), job
(one run), bench (images/s per engine). Ray is imported only by ray_engine. See "Bulk" in the repository README.
"""

from emotion.batch.bench import bench_bulk
from emotion.batch.errors import BatchError
from emotion.batch.job import ENGINES, Summary, run
from emotion.batch.rows import COLUMNS, SCHEMA

__all__ = ["COLUMNS", "ENGINES", "SCHEMA", "BatchError", "Summary", "bench_bulk", "run"]
