"""Load on loopback: concurrent gradio_client callers, bounded in count and time."""

import os
import statistics
import threading
import time

import pytest
from gradio_client import Client, handle_file

from tests.conftest import free_port, photo


def rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


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


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc for RSS")
def test_concurrent_callers_no_failures_and_stable_memory(server):
    photos = [photo("nasa_apollo11_crew.jpg"), photo("codait_bryan.png"), photo("noface_pen.jpg")]
    rss, latencies = [], []
    for _ in range(4):  # the first round warms up models, caches, thread pools and allocator arenas
        round_latencies, errors = hammer(server, 4, 3, photos)
        assert errors == []
        latencies += round_latencies
        rss.append(rss_mb())
    assert len(latencies) == 48
    p50 = statistics.median(latencies)
    p95 = sorted(latencies)[int(0.95 * len(latencies)) - 1]
    rounded = [round(r) for r in rss]
    print(f"load: 48 requests, p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, RSS per round {rounded} MB")
    assert rss[-1] - rss[1] < 150, f"RSS kept growing after warm-up: {[round(r) for r in rss]}"


def test_queue_limit_turns_extra_requests_away(tiny_model):
    """A full queue answers at once with a message; accepted requests still succeed."""
    from app import build_demo, launch_options
    from emotion.settings import Settings

    settings = Settings(model=str(tiny_model), concurrency=1, queue_size=1)
    demo = build_demo(settings)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(settings)
    )
    try:
        latencies, errors = hammer(f"http://127.0.0.1:{port}/", 6, 1, [photo("noface_pen.jpg")])
    finally:
        demo.close()
    assert errors, "six simultaneous requests cannot all fit one worker and a queue of one"
    assert all("queue is full" in e.lower() or "full" in e.lower() for e in errors), errors
    assert len(latencies) >= 1 and len(latencies) + len(errors) == 6
