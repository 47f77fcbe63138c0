"""The local engine: chunks of images across worker processes of this machine, no Ray needed.

Each worker process loads MTCNN and the classifier once and runs ``ChunkAnalyzer`` on chunks of
``batch_size`` paths; the main process only commits their rows (emotion.batch.store). A few chunks per
worker are in flight at a time, so memory stays bounded whatever the number of images.

Why processes with one torch thread each rather than one process using all cores: MTCNN spends its time
in many small convolutions (an image pyramid), which torch's intra-op threads split poorly, and the
Python between them is serial. Measured on the (shared, busy) 2-core development machine, models loaded,
the 12 shared photos: 2 processes x 1 thread 1.9-2.4 images/s and 0.25-0.29 CPU s per image, against
1.3-2.0 images/s and 0.31-0.37 CPU s per image for 1 process x 2 threads (three runs each, interleaved).
Decoding is a few percent of the time per image, so there is no separate prefetch thread.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait

import pyarrow as pa

from emotion.batch.analyze import ChunkAnalyzer, quiet_model_loading, spread_batch
from emotion.batch.store import PartWriter
from emotion.settings import Settings

log = logging.getLogger(__name__)

IN_FLIGHT_PER_WORKER = 2  # one chunk running, one queued: a worker never waits, memory stays bounded


def default_workers() -> int:
    return max(1, os.cpu_count() or 1)


def chunks(paths: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def run_local(
    todo: list[str],
    sink: PartWriter,
    *,
    settings: Settings,
    model: str,
    batch_size: int,
    workers: int | None,
    progress: Callable[[int], None],
) -> None:
    workers = min(workers or default_workers(), len(todo))
    batch_size = spread_batch(len(todo), batch_size, workers)
    log.info("local engine: %d worker process(es), %d images per batch", workers, batch_size)
    if workers == 1:
        analyze = ChunkAnalyzer(settings, model)  # in this process, with torch's own thread count
        for chunk in chunks(todo, batch_size):
            progress(sink.add(analyze(chunk)))
        return
    context = multiprocessing.get_context("spawn")  # fork after torch has started threads can deadlock
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(settings, model))
    pending: set[Future] = set()
    try:
        for chunk in chunks(todo, batch_size):
            pending.add(pool.submit(_analyze, chunk))
            if len(pending) < workers * IN_FLIGHT_PER_WORKER:
                continue
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                progress(sink.add(future.result()))
        for future in _as_done(pending):
            progress(sink.add(future.result()))
        pool.shutdown()
    except BaseException:
        # Interrupted (or a worker failed): what finished is committed by the caller's flush; the rest is
        # dropped and redone by the next run. Workers finish their current chunk and exit.
        pool.shutdown(wait=False, cancel_futures=True)
        raise


def _as_done(pending: set[Future]) -> Iterator[Future]:
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        yield from done


_analyzer: ChunkAnalyzer | None = None
_start_error: Exception | None = None
_parent = 0


def _start_worker(settings: Settings, model: str) -> None:
    global _analyzer, _start_error, _parent
    import torch

    _parent = os.getppid()
    # Ctrl-C reaches the whole process group: the main process decides, the workers just finish.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)  # one core per process (see the module docstring)
    quiet_model_loading()
    try:
        _analyzer = ChunkAnalyzer(settings, model)
    except Exception as exc:  # noqa: BLE001  raised from _analyze: the caller sees the message, not a broken pool
        _start_error = exc


def _analyze(chunk: list[str]) -> pa.Table:
    if os.getppid() != _parent:  # the main process was killed: nobody will collect this chunk's rows
        os._exit(0)
    if _analyzer is None:
        raise _start_error or RuntimeError("the worker process did not start")
    return _analyzer(chunk)
