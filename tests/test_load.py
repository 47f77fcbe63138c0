"""Load on loopback: concurrent gradio_client callers, bounded in count and time."""

import os
import statistics
import threading
import time

import pytest
from gradio_client import Client, handle_file

from tests.conftest import launch_app, photo


def hammer(url: str, callers: int, each: int, photos: list) -> tuple[list[float], list[str]]:
    latencies, errors, lock = [], [], threading.Lock()

    def caller(k):
        client = Client(url, verbose=False)
        for i in range(each):
            start = time.perf_counter()
            try:
                doc = client.predict(
                    handle_file(str(photos[(k + i) % len(photos)])), "local", "", 0.3, api_name="/analyze"
                )[-1]
                assert "faces" in doc
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as exc:
                with lock:
                    errors.append(str(exc))

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "callers did not finish in time"
    return latencies, errors


def rss_of(pid: int) -> float:
    """MB resident in the server and the processes under it (its photo workers and their forkserver)."""
    from emotion.bench import process_tree

    total = 0
    for member in process_tree(pid):
        try:
            with open(f"/proc/{member}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
        except (OSError, StopIteration):
            continue  # ended meanwhile
    return total / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc for RSS")
def test_eight_callers_ten_requests_each_no_errors_and_stable_memory(tiny_model):
    """``python app.py`` as a Space runs it, in its own processes (the server and its photo workers), so that
    their memory is measured alone."""
    from emotion.bench import start_app

    photos = [photo("nasa_apollo11_crew.jpg"), photo("codait_bryan.png"), photo("noface_pen.jpg")]
    proc, url = start_app(str(tiny_model))
    try:
        _, errors = hammer(url, 8, 5, photos)  # warm-up: models, caches, thread pools, allocator arenas
        assert errors == []
        warm = rss_of(proc.pid)
        latencies, errors = hammer(url, 8, 10, photos)
        grown = rss_of(proc.pid) - warm
    finally:
        proc.terminate()
        proc.wait(30)
    assert errors == [] and len(latencies) == 80
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[int(0.95 * len(latencies)) - 1]
    print(f"load: 8 x 10 requests, 0 errors, p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, RSS +{grown:.0f} MB")
    assert grown <= 100, f"RSS grew {grown:.0f} MB after warm-up"


def test_forty_at_once_extras_are_turned_away_and_the_next_is_served_fast(tiny_model):
    """The default queue (2 at work, 32 waiting): a burst of 40 gets Gradio's queue-full message for the
    extras, every accepted request succeeds, and the server answers the next request within 2 s."""
    from emotion.settings import Settings

    settings = Settings(model=str(tiny_model))
    assert (settings.concurrency, settings.queue_size) == (2, 32)
    demo, url = launch_app(settings)
    try:
        clients = [Client(url, verbose=False) for _ in range(40)]
        image = handle_file(str(photo("pexels_sad_baby.jpeg")))  # about half a second each: the queue fills
        jobs = [c.submit(image, "local", "", 0.3, api_name="/analyze") for c in clients]
        served, errors = 0, []
        for job in jobs:
            try:
                assert "faces" in job.result(timeout=300)[-1]
                served += 1
            except Exception as exc:
                errors.append(str(exc))
        start = time.perf_counter()
        Client(url, verbose=False).predict(image, "local", "", 0.3, api_name="/analyze")
        next_s = time.perf_counter() - start
    finally:
        demo.close()
    print(f"burst: 40 at once, {served} served, {len(errors)} turned away; next request {next_s:.2f} s")
    assert errors and all("queue is full" in e.lower() for e in errors), errors[:3]
    assert served + len(errors) == 40 and served >= settings.queue_size
    assert next_s <= 2.0
