"""Images/s of each engine on the same images, end to end (start-up, model loading and writing included)."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from emotion.batch.job import run
from emotion.batch.sources import list_images

log = logging.getLogger(__name__)


def bench_bulk(
    folder_or_paths: str | os.PathLike | list, n: int = 200, engines: tuple[str, ...] = ("local", "ray"), **options
) -> dict[str, float]:
    """{engine: images/s} for ``n`` images made by repeating the given ones (symlinks in a temporary folder).

    Every engine starts from nothing (no earlier output) and its time includes what a user waits for:
    worker or Ray start-up, model loading, analysis and the final Parquet file. ``options`` go to run().
    """
    if isinstance(folder_or_paths, (list, tuple)):
        images = [os.path.abspath(p) for p in folder_or_paths]
    else:
        images = list_images(folder_or_paths)
    if not images:
        raise ValueError(f"no images in {folder_or_paths!r}")
    result = {}
    with tempfile.TemporaryDirectory(prefix="emotion-bench-bulk-") as tmp:
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i in range(n):
            source = Path(images[i % len(images)])
            (folder / f"{i:05d}_{source.name}").symlink_to(source)
        for engine in engines:
            start = time.perf_counter()
            summary = run(folder, Path(tmp) / f"{engine}.parquet", engine=engine, progress=False, **options)
            seconds = time.perf_counter() - start
            result[engine] = summary.analysed / seconds
            log.info("bulk %s: %d images in %.1f s: %.2f images/s", engine, summary.analysed, seconds, result[engine])
    return result
