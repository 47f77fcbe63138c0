"""Photo analyses in worker processes (emotion.serving.workers): the same answers as on the server's own
threads, refusals with their message, a dead worker replaced, and no worker left once the server ends."""

from __future__ import annotations

import os
import signal
import time

import pytest
from gradio_client import Client, handle_file

from tests.conftest import launch_app, photo

APOLLO = "nasa_apollo11_crew.jpg"


def cpu_of(pids: list[int]) -> float:
    from emotion.bench import cpu_seconds

    return sum(cpu_seconds(pid) or 0.0 for pid in pids)


@pytest.fixture(scope="module")
def worker_app(tiny_model):
    from emotion.settings import Settings

    demo, url = launch_app(Settings(model=str(tiny_model), workers=2))
    yield demo, url
    demo.close()
    demo.photo_workers.close()


def test_workers_answer_as_the_server_threads_do(worker_app, client):
    demo, url = worker_app
    workers = demo.photo_workers
    pids = workers.pids()
    assert len(pids) == 2 and os.getpid() not in pids
    with_workers = Client(url, verbose=False)
    args = (handle_file(str(photo(APOLLO))), "local", "", 0.3, None, False)
    before = cpu_of(pids)
    ours = with_workers.predict(*args, api_name="/analyze")
    theirs = client.predict(*args, api_name="/analyze")  # the session's app: workers=0
    assert cpu_of(pids) - before > 0.02  # the analysis ran in a worker
    assert len(ours[5]["faces"]) == 3
    for a, b in zip(ours[5]["faces"], theirs[5]["faces"], strict=True):
        assert a["box"] == b["box"] and a["label"] == b["label"]
        assert a["scores"] == pytest.approx(b["scores"], abs=1e-5)
    assert ours[1] == theirs[1] and os.path.getsize(ours[0]) > 10_000
    text = with_workers.predict(handle_file(str(photo(APOLLO))), "local", "", 0.3, None, api_name="/emotions")
    assert '"faces"' in text and text.count('"label"') == 3


def test_a_refusal_in_a_worker_reaches_the_caller_with_its_message(worker_app):
    _, url = worker_app
    with pytest.raises(Exception, match="threshold"):
        Client(url, verbose=False).predict(
            handle_file(str(photo(APOLLO))), "local", "", 5, None, False, api_name="/analyze"
        )


def test_a_worker_that_ended_is_replaced_for_the_next_request(worker_app):
    demo, url = worker_app
    workers = demo.photo_workers
    caller = Client(url, verbose=False)
    args = (handle_file(str(photo(APOLLO))), "local", "", 0.3, None, False)
    caller.predict(*args, api_name="/analyze")
    old = workers.pids()
    os.kill(old[0], signal.SIGKILL)
    time.sleep(0.5)  # the pool notices its worker is gone
    assert len(caller.predict(*args, api_name="/analyze")[5]["faces"]) == 3
    assert set(workers.pids()).isdisjoint(old)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc")
def test_no_worker_outlives_the_server(tiny_model):
    from emotion.bench import process_tree, start_app

    proc, _ = start_app(str(tiny_model))  # python app.py: two photo workers by default
    tree = process_tree(proc.pid)
    assert len(tree) >= 3  # the server, the forkserver, the workers
    proc.send_signal(signal.SIGTERM)
    proc.wait(30)
    deadline = time.time() + 10
    while time.time() < deadline and any(os.path.exists(f"/proc/{pid}") for pid in tree):
        time.sleep(0.2)
    assert [pid for pid in tree if os.path.exists(f"/proc/{pid}")] == []
