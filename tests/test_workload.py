"""emotion.workload: what MTCNN's lanes read to decide whether a detection may spread over every core."""

import threading

from emotion.workload import in_progress, working


def test_nested_blocks_in_one_thread_count_once_and_end_with_the_outermost():
    assert in_progress() == 0
    with working():
        with working():
            assert in_progress() == 1
        assert in_progress() == 1  # the inner block ended, the outer one still runs
    assert in_progress() == 0


def test_each_thread_in_a_block_counts_one():
    entered, release = threading.Barrier(3), threading.Event()

    def request():
        with working():
            entered.wait(10)
            release.wait(10)

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    entered.wait(10)
    try:
        assert in_progress() == 2
        with working():
            assert in_progress() == 3
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert in_progress() == 0


def test_a_block_that_raises_still_ends_and_works_as_a_decorator():
    @working()
    def fails():
        assert in_progress() == 1
        raise ValueError("no face")

    try:
        fails()
    except ValueError:
        pass
    assert in_progress() == 0
