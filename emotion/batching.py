"""Cross-request batching: crops from requests that arrive together go through one forward pass.

The first request to arrive becomes the leader: it waits a few milliseconds for others,
then runs the classifier once on everything pending and hands each request its rows.
An error in the forward pass reaches every request of that batch; input errors never
get here (they are raised before detection).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass
class _Job:
    items: list
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    def __init__(self, fn, window_s: float = 0.005, max_items: int = 64):
        self._fn = fn
        self.window_s = window_s
        self.max_items = max_items
        self._lock = threading.Lock()
        self._pending: list[_Job] = []
        self._leading = False

    def __call__(self, items: list) -> np.ndarray:
        job = _Job(list(items))
        with self._lock:
            self._pending.append(job)
            lead = not self._leading
            self._leading = True
        if lead:
            time.sleep(self.window_s)
            self._drain()
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result

    def _drain(self) -> None:
        while True:
            with self._lock:
                batch, size = [], 0
                while self._pending and (not batch or size + len(self._pending[0].items) <= self.max_items):
                    size += len(self._pending[0].items)
                    batch.append(self._pending.pop(0))
                if not batch:
                    self._leading = False
                    return
            self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        try:
            out = self._fn([item for job in batch for item in job.items])
            start = 0
            for job in batch:
                job.result = out[start : start + len(job.items)]
                start += len(job.items)
        except BaseException as exc:  # handed to each waiting request, raised in its own thread
            for job in batch:
                job.error = exc
        finally:
            for job in batch:
                job.done.set()
