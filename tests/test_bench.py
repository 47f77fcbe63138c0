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
    assert (
        main(
            [
                "--sizes",
                "2",
                "--repeats",
                "1",
                "--photos",
                str(photos),
                "--callers",
                "2",
                "--requests",
                "1",
                "--skip",
                "options",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.read_text())
    assert {r["model"] for r in report["classify"]} == {"bundled", "ViT-B/16"}
    assert report["end_to_end"][0]["faces"] == 1 and report["served"]["errors"] == 0
    assert "seed loop" in capsys.readouterr().out
