"""python -m emotion, as a user runs it."""

import json
import subprocess
import sys

from tests.conftest import ROOT, photo


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "emotion", *args], capture_output=True, text=True, cwd=ROOT, timeout=300
    )


def test_json_for_several_photos(tiny_model):
    apollo, pen = str(photo("nasa_apollo11_crew.jpg")), str(photo("noface_pen.jpg"))
    out = run(apollo, pen, "--json", "--model", str(tiny_model))
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert len(doc[apollo]["faces"]) == 3 and doc[pen]["faces"] == []


def test_text_output_and_a_clear_error(tiny_model, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    out = run(str(photo("codait_bryan.png")), str(bad), "--model", str(tiny_model))
    assert out.returncode == 1
    assert "Found 1 face" in out.stdout and "face 1 at [" in out.stdout
    assert "notes.jpg: error: The file is not an image" in out.stderr and "Traceback" not in out.stderr


def test_csv_and_annotated_images(tiny_model, tmp_path):
    out = run(
        str(photo("nasa_apollo11_crew.jpg")),
        "--model",
        str(tiny_model),
        "--csv",
        str(tmp_path / "r.csv"),
        "--annotate",
        str(tmp_path / "annotated"),
    )
    assert out.returncode == 0, out.stderr
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("image,face,x1,y1,x2,y2,detection_score,label") and len(lines) == 4
    annotated = tmp_path / "annotated" / "nasa_apollo11_crew_faces.png"
    from PIL import Image

    assert Image.open(annotated).size == (600, 471)
