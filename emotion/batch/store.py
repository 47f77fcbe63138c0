"""The output on disk, designed for resuming: part files committed atomically, then one FILE.parquet.

While a run works, finished images go into ``FILE.parquet.parts/part-NNNNNN.parquet``; each part is
written to a ``.tmp`` name and renamed, so a part on disk is always complete and a killed run leaves at
most a ``.tmp`` (deleted by the next run). An image's rows always land in one part together. When every
image is done the parts (and an earlier FILE.parquet, if any) are streamed into ``FILE.parquet`` (again
via a temporary name and a rename) and the parts folder is removed.

Resuming: the images already written are the paths in FILE.parquet plus those in the parts; a re-run
skips them. If a run dies between renaming FILE.parquet and removing the parts, the next assembly keeps
each path's rows once (the first file holding a path wins), so there are no duplicates either way.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emotion.batch.errors import BatchError
from emotion.batch.rows import COLUMNS, MODEL_KEY, image_count, schema_for

log = logging.getLogger(__name__)

ROW_GROUP_ROWS = 65_536  # rows buffered per row group of FILE.parquet while assembling it
PART_SECONDS = 60.0  # a part is committed at least this often: an interruption costs at most about a minute


class Store:
    def __init__(self, out: str | os.PathLike, model: str):
        self.out = Path(out)
        self.parts = self.out.with_name(self.out.name + ".parts")
        self.model = model
        self.schema = schema_for(model)
        self._next_part: int | None = None

    # --- opening and resuming -------------------------------------------------------------------
    def open(self) -> set[str]:
        """Checks that the output can be written and was written by the same model; the paths already done."""
        if self.out.is_dir():
            raise BatchError(f"--out '{self.out}' is a folder: give a file name such as results.parquet.")
        try:
            self.parts.mkdir(parents=True, exist_ok=True)
            probe = self.parts / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise BatchError(f"Cannot write --out '{self.out}': {exc.strerror or exc}.") from exc
        for tmp in self.parts.glob("*.tmp"):  # left by a run that was killed while writing
            tmp.unlink()
        done: set[str] = set()
        for path in self._existing():
            self._check_model(path)
            done.update(pq.read_table(path, columns=["path"]).column("path").to_pylist())
        return done

    def _existing(self) -> list[Path]:
        return ([self.out] if self.out.is_file() else []) + self.part_files()

    def part_files(self) -> list[Path]:
        return sorted(self.parts.glob("part-*.parquet")) if self.parts.is_dir() else []

    def _check_model(self, path: Path) -> None:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise BatchError(f"'{path}' exists and is not a Parquet file: choose another --out.") from exc
        if list(schema.names) != list(COLUMNS):
            raise BatchError(f"'{path}' was not written by emotion.batch (other columns): choose another --out.")
        written_by = (schema.metadata or {}).get(MODEL_KEY, b"").decode()
        if written_by and written_by != self.model:
            raise BatchError(
                f"'{path}' holds results of the model '{written_by}', not '{self.model}': resuming would mix "
                "two models in one file. Use the same --model, or another --out."
            )

    # --- writing --------------------------------------------------------------------------------
    def write_part(self, table: pa.Table) -> Path:
        if self._next_part is None:
            self._next_part = max((int(p.stem.split("-")[1]) for p in self.part_files()), default=-1) + 1
        final = self.parts / f"part-{self._next_part:06d}.parquet"
        self._next_part += 1
        _atomic_write(table.cast(self.schema), final)
        log.debug("wrote %s: %d rows", final.name, table.num_rows)
        return final

    def assemble(self) -> None:
        """FILE.parquet from the earlier FILE.parquet and all parts, each path's rows once; parts removed."""
        parts = self.part_files()
        if not parts and self.out.is_file():
            shutil.rmtree(self.parts, ignore_errors=True)
            return
        seen: set[str] = set()
        tmp = self.out.with_name(self.out.name + ".tmp")
        buffer: list[pa.Table] = []
        with pq.ParquetWriter(tmp, self.schema) as writer:
            for source in self._existing():
                in_file: set[str] = set()
                for batch in pq.ParquetFile(source).iter_batches(batch_size=ROW_GROUP_ROWS):
                    table = pa.Table.from_batches([batch]).cast(self.schema)
                    paths = table.column("path").to_pylist()
                    in_file.update(paths)
                    buffer.append(table.filter(pa.array([p not in seen for p in paths], pa.bool_())))
                    if sum(t.num_rows for t in buffer) >= ROW_GROUP_ROWS:
                        writer.write_table(pa.concat_tables(buffer))
                        buffer = []
                # marked seen only after the whole file: one image's rows may span two of its batches
                seen |= in_file
            if buffer:
                writer.write_table(pa.concat_tables(buffer))
        _fsync(tmp)
        os.replace(tmp, self.out)
        shutil.rmtree(self.parts, ignore_errors=True)


class PartWriter:
    """Collects finished chunks; commits a part every ``part_size`` images or ``max_seconds``, and at the end.

    The size bounds the number of files on a fast cluster; the time bounds what an interruption can cost on
    a slow machine.
    """

    def __init__(self, store: Store, part_size: int, max_seconds: float = PART_SECONDS):
        self.store = store
        self.part_size = max(1, part_size)
        self.max_seconds = max_seconds
        self.tables: list[pa.Table] = []
        self.images = 0
        self.since = time.monotonic()

    def add(self, table: pa.Table) -> int:
        """Buffers the chunk's rows; returns how many images it held."""
        n = image_count(table)
        self.tables.append(table)
        self.images += n
        if self.images >= self.part_size or time.monotonic() - self.since >= self.max_seconds:
            self.flush()
        return n

    def flush(self) -> None:
        if self.tables:
            self.store.write_part(pa.concat_tables(self.tables))
        self.tables, self.images, self.since = [], 0, time.monotonic()


def _atomic_write(table: pa.Table, final: Path) -> None:
    tmp = final.with_name(final.name + ".tmp")
    pq.write_table(table, tmp)
    _fsync(tmp)
    os.replace(tmp, final)  # atomic on POSIX: readers see no part or a whole part


def _fsync(path: Path) -> None:
    # A rename can reach the disk before the file's data; without this a power cut could leave an empty part.
    with open(path, "rb") as f:
        os.fsync(f.fileno())
