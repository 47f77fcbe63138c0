"""Requests that arrive together share one forward pass, and get their own rows back."""

import threading
import time

import numpy as np
import pytest

from emotion.batching import MicroBatcher


def test_concurrent_calls_share_batches_and_get_their_own_rows():
    calls = []

    def fn(items):
        calls.append(len(items))
        time.sleep(0.02)
        return np.array([[x, x * 10] for x in items], dtype=float)

    batcher = MicroBatcher(fn, window_s=0.05)
    results = {}

    def request(k):
        results[k] = batcher([k] * (k + 1))

    threads = [threading.Thread(target=request, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(6):
        np.testing.assert_array_equal(results[k], [[k, 10 * k]] * (k + 1))
    assert sum(calls) == 21 and len(calls) < 6  # fewer forward passes than requests


def test_max_items_splits_batches():
    calls = []
    batcher = MicroBatcher(lambda items: calls.append(len(items)) or np.zeros((len(items), 1)), 0.05, max_items=4)
    threads = [threading.Thread(target=batcher, args=([0, 0, 0],)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(calls) == [3, 3, 3]


def test_errors_reach_the_caller_and_the_batcher_recovers():
    def fn(items):
        if "bad" in items:
            raise RuntimeError("forward failed")
        return np.ones((len(items), 1))

    batcher = MicroBatcher(fn, window_s=0.0)
    with pytest.raises(RuntimeError, match="forward failed"):
        batcher(["bad"])
    assert batcher(["ok", "ok"]).shape == (2, 1)
