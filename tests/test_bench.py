"""The benchmark runs end to end (its numbers are read from its report, never asserted here)."""

import json
import shutil

from emotion.bench import main
from tests.conftest import photo


def test_benchmark_smoke(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(photo("codait_bryan.png"), photos)
    out = tmp_path / "bench.json"
    argv = [
        "--sizes",
        "2",
        "--repeats",
        "1",
        "--photos",
        str(photos),
        "--json",
        str(out),
        "--skip",
        "options",
        "video",
        "bulk",
    ]
    argv += ["--callers", "2", "--requests", "1", "--served-requests", "2", "--rounds", "1"]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert {r["model"] for r in report["classify"]} == {"bundled", "ViT-B/16"}
    assert report["end_to_end"][0]["faces"] == 1
    detect = report["detect"]
    assert detect["photos"][0]["faces_stock"] == 1 and detect["summary"]["ours"]["same_faces_on_every_photo"]
    assert report["startup"]["seconds_to_first_answer"] > 0 and report["startup"]["first_start_empty_cache_s"] > 0
    assert report["served"]["app_idle_cpu_percent"] >= 0 and report["served"]["null_idle_cpu_percent"] >= 0
    assert report["served"]["p50_ratio"] > 0 and report["served"]["requests"] == 2
    assert report["served"]["lean_p50_ratio"] > 0
    assert report["concurrency"]["errors"] == 0 and report["concurrency"]["callers"] == 2
    assert report["concurrency"]["cpu_bound_ratio"] > 0
    assert len(report["concurrency"]["round_ratios"]) == report["concurrency"]["rounds"] == 1
    assert report["concurrency"]["round_ratios"][0] == report["concurrency"]["throughput_ratio"]  # one round
    assert report["concurrency"]["steady_throughput_ratio"] > 0
    assert (
        report["concurrency"]["1_callers"]["steady_requests_per_s"]
        >= report["concurrency"]["1_callers"]["requests_per_s"]
    )
    assert report["concurrency"]["do_nothing_app"]["errors"] == 0
    assert report["concurrency"]["lanes_off"]["errors"] == 0 and report["concurrency"]["lanes_off"]["round_ratios"]
    assert report["concurrency"]["lean"]["errors"] == report["concurrency"]["do_nothing_app"]["lean"]["errors"] == 0
    assert report["concurrency"]["lean"]["2_callers"]["callers_cpu_ms_per_request"] is not None
    assert report["concurrency"]["1_callers"]["server_cpu_ms_per_request"] > 0
    printed = capsys.readouterr().out
    assert "seed loop" in printed and "do-nothing app" in printed and "stock" in printed and "lean callers" in printed
    assert "lanes off (EMOTION_DETECT_THREADS=1), same callers" in printed
    assert "the ratio of each round to the 1-caller round before it" in printed
    assert "while all 2 callers were at work" in printed


def test_the_cpu_bound_is_the_cores_over_the_cpu_a_request_costs_server_and_callers_together():
    import os

    from emotion.bench import cpu_bound

    bound = cpu_bound({"server_cpu_ms_per_request": 150.0, "callers_cpu_ms_per_request": 100.0}, 4.0)
    cores = os.cpu_count() or 1
    assert bound["cpu_bound_requests_per_s"] == cores / 0.25
    assert bound["cpu_bound_ratio"] == cores / 0.25 / 4.0
    assert cpu_bound({"server_cpu_ms_per_request": None, "callers_cpu_ms_per_request": 1.0}, 4.0) == {}  # no /proc


def test_the_steady_throughput_leaves_out_the_rounds_tail_and_counts_requests_under_way_in_part():
    from emotion.bench import steady_throughput

    # One caller: its requests over the time from its first start to its last answer.
    assert steady_throughput([[(0.0, 1.0), (1.0, 2.0)]]) == 1.0
    # Two callers: the first is done at 2 s; the second's last request (1.5-3.5 s) is a quarter done by then,
    # and the window ends there: 2 + 1 + 0.25 requests in 2 s.
    assert steady_throughput([[(0.0, 1.0), (1.0, 2.0)], [(0.0, 1.5), (1.5, 3.5)]]) == 3.25 / 2
    assert steady_throughput([[(0.0, 1.0)], []]) is None  # a caller with no answer: no reading
