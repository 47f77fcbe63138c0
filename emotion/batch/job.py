"""One bulk run: list the images, skip those already written, analyse the rest with an engine, assemble."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass

import pyarrow.parquet as pq

from emotion.backends.local import resolve
from emotion.batch.analyze import model_name
from emotion.batch.errors import BatchError
from emotion.batch.sources import list_images
from emotion.batch.store import PartWriter, Store
from emotion.settings import Settings

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
DEFAULT_BATCH_SIZE = 8  # images per classification batch; a worker holds about twice this many decoded photos
DEFAULT_PART_SIZE = 1000  # images per committed part file (or a minute's worth, whichever comes first)


@dataclass(frozen=True)
class Summary:
    out: str
    images: int  # in SOURCE
    analysed: int  # by this run
    skipped: int  # already in the output
    faces: int  # rows with a face, in the whole output
    no_face: int  # images without a face
    errors: int  # unreadable files
    seconds: float

    @property
    def images_per_s(self) -> float:
        return self.analysed / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"{self.out}: {self.images} images ({self.analysed} analysed now, {self.skipped} already written): "
            f"{self.faces} faces, {self.no_face} without a face, {self.errors} unreadable; "
            f"{self.seconds:.1f} s, {self.images_per_s:.2f} images/s"
        )


def run(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    engine: str = "local",
    model: str = "",
    batch_size: int = DEFAULT_BATCH_SIZE,
    part_size: int = DEFAULT_PART_SIZE,
    workers: int | None = None,
    settings: Settings | None = None,
    progress: bool = True,
) -> Summary:
    """Analyse every image of ``source`` into the Parquet file ``out``, resuming an earlier run of it."""
    start = time.perf_counter()
    if engine not in ENGINES:
        raise BatchError(f"Unknown engine '{engine}': use {' or '.join(ENGINES)}.")
    for name, value in (("batch size", batch_size), ("part size", part_size), ("workers", workers or 1)):
        if not isinstance(value, int) or value < 1:
            raise BatchError(f"The {name} must be a whole number of at least 1, not {value!r}.")
    settings = settings or Settings()
    model = model_name(model, settings)
    resolve(model)  # a missing model folder or a malformed hub id: a message now, not after Ray has started
    paths = list_images(source)
    if not paths:
        log.warning("no images found in %s", source)
    store = Store(out, model)
    done = store.open()
    todo = [p for p in paths if p not in done]
    skipped = len(paths) - len(todo)
    log.info("%d images in %s: %d already written, %d to analyse", len(paths), source, skipped, len(todo))
    if todo:
        _analyse(todo, store, engine, settings, model, batch_size, part_size, workers, progress)
    store.assemble()
    return _summary(store, len(paths), len(todo), time.perf_counter() - start)


def _analyse(todo, store, engine, settings, model, batch_size, part_size, workers, progress) -> None:
    from tqdm import tqdm

    if engine == "ray":
        try:
            from emotion.batch.ray_engine import run_ray as run_engine
        except ImportError as exc:
            raise BatchError(f"--engine ray needs Ray Data: pip install 'ray[data]' ({exc}).") from exc
    else:
        from emotion.batch.local import run_local as run_engine
    sink = PartWriter(store, part_size)
    bar = tqdm(total=len(todo), unit="img", desc="images", file=sys.stderr, disable=not progress, smoothing=0.05)
    try:
        run_engine(
            todo, sink, settings=settings, model=model, batch_size=batch_size, workers=workers, progress=bar.update
        )
    except KeyboardInterrupt:
        log.warning("interrupted: the finished images are kept; run the same command again to resume")
        raise
    finally:
        sink.flush()  # whatever finished is committed, also when interrupted
        bar.close()


def _summary(store: Store, images: int, analysed: int, seconds: float) -> Summary:
    faces = no_face = errors = 0
    for batch in pq.ParquetFile(store.out).iter_batches(columns=["face", "error"]):
        face, error = batch.column(0), batch.column(1)
        faces += len(face) - face.null_count
        errors += len(error) - error.null_count
        no_face += sum(1 for f, e in zip(face.is_null().to_pylist(), error.is_null().to_pylist()) if f and e)
    return Summary(str(store.out), images, analysed, images - analysed, faces, no_face, errors, seconds)
