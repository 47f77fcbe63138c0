"""Photo analyses in worker processes: one process per request the server works on at once.

Why: a Python process runs Python code on one core at a time (its interpreter lock). A detection's numpy
work, the pipeline's and Gradio's own bookkeeping all hold it, so two analyses in one server process waited
for each other while the second core sat idle. Measured on two cores, four callers with the Apollo portrait
(gradio_client given one TLS context, so that the server has the cores to itself): one server process
13.4 requests/s at 78% of the cores; the same requests shared by two server processes 16.4 requests/s at 93%.

Each worker has a Pipeline of its own (its own bounded model cache) and loads the default model and the
detector when it starts, so the first visitor does not wait for them. Workers are forked from a
multiprocessing forkserver that has imported the analysis code once, so starting one costs its model
loading, not a second import of torch. The server's count of analyses in progress is shared with them
(emotion.workload), so that a lone detection still spreads over the cores and concurrent ones do not.

A worker that dies (killed, out of memory) takes its request with it, with a clear error; the next request
gets fresh workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from emotion import workload
from emotion.errors import EmotionError
from emotion.serving import allocator

log = logging.getLogger(__name__)

# Imported once by the forkserver, before it forks any worker (none of them starts a thread at import).
# "__main__" (app.py, as multiprocessing imports a parent's main module into its children) among them: else
# each worker imported it, and Gradio with it, again.
PRELOAD = ["__main__", "torch", "emotion.serving.photo", "emotion.detectors.mtcnn", "emotion.backends.local"]

_pipeline = None  # a worker process's Pipeline


def _start(settings, shared, log_level: int, tune_allocator: bool) -> None:
    """A worker's set-up: follow the server's count, the server's allocator settings, one share of the cores
    for torch, models loaded."""
    global _pipeline
    began = time.perf_counter()
    # A forked worker starts with the forkserver's logging, which nothing has set up: log as the server does.
    logging.basicConfig(level=log_level, format="%(asctime)s %(processName)s %(name)s %(message)s")
    import torch

    from emotion.detectors import get_detector
    from emotion.pipeline import Pipeline

    threading.Thread(target=_orphaned, name="worker-watch", daemon=True).start()
    workload.follow(shared)
    if tune_allocator:  # a forked worker starts with the forkserver's allocator, which nothing has set up
        allocator.tune()
    torch.get_num_threads()  # torch's first use sets up its pool, which would undo a setting made before it
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.concurrency))
    _pipeline = Pipeline(settings)
    try:
        _pipeline.backend("local", "")
        get_detector(settings.detector, settings)
    except Exception as exc:  # the first request loads them again, and reports what goes wrong
        log.warning("worker %d could not load the models at start: %s", os.getpid(), exc)
    log.info("worker %d ready in %.1f s", os.getpid(), time.perf_counter() - began)


def _orphaned() -> None:
    """End this worker once the server has ended. A server stopped by a signal does not shut its pool down,
    and its workers would stay, idle, for good (they hold the forkserver's pipe open, so it stays too)."""
    parent = multiprocessing.parent_process()  # the server, whatever the start method
    if parent is not None:
        parent.join()
        os._exit(0)


def _run(fn, args: tuple):
    return fn(_pipeline, *args)


def _ready() -> int:
    return os.getpid()


class Workers:
    """``processes`` worker processes; ``run(fn, *args)`` is ``fn(pipeline, *args)`` in one of them (``fn``
    a module-level function, its arguments and result plain, picklable data)."""

    def __init__(self, settings, processes: int):
        self.settings = settings
        self.processes = processes
        methods = multiprocessing.get_all_start_methods()
        self._context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
        if self._context.get_start_method() == "forkserver":
            self._context.set_forkserver_preload(PRELOAD)
        self._shared = self._context.RawValue("i", 0)
        workload.publish(self._shared)
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start every worker now (each loads the models), without waiting for them."""
        pool = self._current()
        for _ in range(self.processes):  # each job finding no idle worker starts one more
            pool.submit(_ready)

    def pids(self) -> list[int]:
        pool = self._pool
        return [p.pid for p in (pool._processes or {}).values()] if pool else []  # noqa: SLF001

    def run(self, fn, *args):
        for _ in range(2):
            pool = self._current()
            try:
                future = pool.submit(_run, fn, args)
            except BrokenProcessPool:  # a worker ended between requests: this one gets fresh workers
                self._discard(pool)
                continue
            try:
                return future.result()
            except BrokenProcessPool:
                self._discard(pool)
                log.error("a worker process ended during an analysis")
                raise EmotionError(
                    "The analysis stopped: its worker process ended (out of memory, or stopped). Try again."
                ) from None
        raise EmotionError("The server could not start a worker process for this analysis. Try again.")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def _current(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes,
                    self._context,
                    initializer=_start,
                    initargs=(
                        self.settings,
                        self._shared,
                        logging.getLogger().getEffectiveLevel(),
                        allocator.tuned(),  # app.py tunes it before it builds the demo
                    ),
                )
            return self._pool

    def _discard(self, pool: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
        pool.shutdown(wait=False, cancel_futures=True)
