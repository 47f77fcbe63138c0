"""A bounded cache of loaded models, safe for many request threads.

- One lock per key: a slow load (a hub download) holds up only the requests for that model; the
  global lock guards the dictionaries alone and is never held while loading.
- Least recently used models go first, bounded by count and by a memory budget.
- A failed load is remembered for ``failure_ttl_s``, so a failing id cannot be hammered.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class ModelCache(Generic[T]):
    def __init__(self, max_items: int = 4, max_bytes: int = 2**30, failure_ttl_s: float = 60.0):
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.failure_ttl_s = failure_ttl_s
        self._items: OrderedDict[Hashable, tuple[T, int]] = OrderedDict()
        self._failures: dict[Hashable, tuple[float, BaseException]] = {}
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, load: Callable[[], T], size: Callable[[T], int]) -> T:
        hit = self._lookup(key)
        if hit is not None:
            return hit
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # requests for other models go on meanwhile
            hit = self._lookup(key)  # loaded while this request waited for the key
            if hit is not None:
                return hit
            try:
                value = load()
            except Exception as exc:
                with self._lock:
                    self._failures[key] = (time.monotonic(), exc)
                raise
            self._insert(key, value, size(value))
            return value

    def _lookup(self, key: Hashable) -> T | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key][0]
            failed = self._failures.get(key)
            if failed is not None:
                if time.monotonic() - failed[0] < self.failure_ttl_s:
                    raise failed[1]
                del self._failures[key]
        return None

    def _insert(self, key: Hashable, value: T, nbytes: int) -> None:
        with self._lock:
            self._items[key] = (value, nbytes)
            self._failures.pop(key, None)
            # The newest model always stays, even alone over the budget: it is the one being asked for.
            while len(self._items) > 1 and (
                len(self._items) > self.max_items or sum(n for _, n in self._items.values()) > self.max_bytes
            ):
                old, _ = self._items.popitem(last=False)
                log.info("model cache: evicted %s", old)

    def keys(self) -> list[Hashable]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._failures.clear()
