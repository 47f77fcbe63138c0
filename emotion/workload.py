"""How many analyses this process is working on at this moment, for MTCNN's lanes to decide on.

A detection spreads its work over every core only when nothing else is being worked on: with another request
drawing, encoding or classifying on the second core, a spread detection's lane waited its turn there, and
the request took longer than on one core (measured on two cores, the Apollo portrait: 51-68 ms spread
beside a busy thread, 45-55 ms on one core). A request is counted from the moment its handler starts
(app.py, emotion.pipeline) until it returns; nested counting in one thread counts once.

When the server analyses photos in worker processes (emotion.serving.workers), the server's count is shared
with them: it ``publish``es it into a number in shared memory, and each worker ``follow``s it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth: dict[int, int] = {}  # thread id -> how many nested working() blocks it is in
_published: list = []  # shared counts (multiprocessing RawValues) kept equal to len(_depth), one per Workers
_followed = None  # in a worker process: the server's shared count


@contextmanager
def working():
    """The block counts as one analysis in progress (per thread, however deeply nested)."""
    me = threading.get_ident()
    with _lock:
        _depth[me] = _depth.get(me, 0) + 1
        _publish()
    try:
        yield
    finally:
        with _lock:
            if _depth[me] == 1:
                del _depth[me]
            else:
                _depth[me] -= 1
            _publish()


def _publish() -> None:
    for shared in _published:
        shared.value = len(_depth)


def publish(shared) -> None:
    """Keep ``shared`` (a RawValue of a C int) equal to this process's count from now on."""
    with _lock:
        _published.append(shared)
        _publish()


def follow(shared) -> None:
    """In a worker process: count the analyses of the process that ``publish``es ``shared`` as well."""
    global _followed
    _followed = shared


def in_progress() -> int:
    """Analyses in progress now, each thread's counted once (with a followed count: the larger of the two,
    since the server counts the request a worker is analysing as well)."""
    mine = len(_depth)  # a dict's len is atomic: no lock needed to read it
    return mine if _followed is None else max(mine, _followed.value)
