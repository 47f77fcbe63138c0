"""How many analyses this process is working on at this moment, for MTCNN's lanes to decide on.

A detection spreads its work over every core only when nothing else is being worked on: with another request
drawing, encoding or classifying on the second core, a spread detection's lane waited its turn there, and
the request took longer than on one core (measured on two cores, the Apollo portrait: 51-68 ms spread
beside a busy thread, 45-55 ms on one core). A request is counted from the moment its handler starts
(app.py, emotion.pipeline) until it returns; nested counting in one thread counts once.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

_lock = threading.Lock()
_depth: dict[int, int] = {}  # thread id -> how many nested working() blocks it is in


@contextmanager
def working():
    """The block counts as one analysis in progress (per thread, however deeply nested)."""
    me = threading.get_ident()
    with _lock:
        _depth[me] = _depth.get(me, 0) + 1
    try:
        yield
    finally:
        with _lock:
            if _depth[me] == 1:
                del _depth[me]
            else:
                _depth[me] -= 1


def in_progress() -> int:
    """Analyses in progress now, each thread's counted once."""
    return len(_depth)  # a dict's len is atomic: no lock needed to read it
