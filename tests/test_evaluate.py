"""python -m emotion.evaluate: metrics checked by hand, and a run on a generated folder."""

import json

import numpy as np
import pytest
from PIL import Image

from emotion.evaluate import main, metrics
from emotion.labels import LABELS

A, D, H, S = (LABELS.index(x) for x in ("angry", "disgust", "happy", "sad"))


def test_metrics_by_hand():
    # truth: 3 angry, 2 happy, 1 sad; predictions: angry angry happy | happy sad | (no face)
    truth = np.array([A, A, A, H, H, S])
    pred = [A, A, H, H, S, -1]
    probs = np.zeros((6, 7))
    for i, p in enumerate(pred[:5]):
        probs[i, p] = 0.8  # confident 0.8 on every face: 3 right of 5
        probs[i, (p + 1) % 7] = 0.2
    m = metrics(truth, probs)
    assert m["n"] == 6 and m["no_face"] == 1
    assert m["accuracy"] == pytest.approx(3 / 6)
    # angry: P=2/2 R=2/3 F1=0.8; happy: P=1/2 R=1/2 F1=0.5; sad: P=0/1 R=0 F1=0
    assert m["per_class"]["angry"] == pytest.approx({"recall": 2 / 3, "precision": 1.0, "f1": 0.8, "support": 3})
    assert m["per_class"]["happy"]["f1"] == pytest.approx(0.5)
    assert m["per_class"]["sad"]["recall"] == 0.0
    assert m["macro_f1"] == pytest.approx((0.8 + 0.5 + 0.0) / 3)
    assert set(m["per_class"]) == {"angry", "happy", "sad"}  # absent classes are not averaged in
    confusion = np.array(m["confusion"])
    assert confusion[A, A] == 2 and confusion[A, H] == 1 and confusion[H, S] == 1 and confusion.sum() == 5
    # One confidence bin holds the five faces: |3/5 right - 0.8 confidence|; the no-face row is left out.
    assert m["ece"] == pytest.approx(0.2)


def test_command_on_a_generated_folder(tiny_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    for label, n in [("angry", 3), ("Happiness", 2), ("sad", 1)]:  # folder names are normalised too
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(tmp_path / "data" / label / f"{i}.png")
    (tmp_path / "exclude.txt").write_text("angry/2.png\n")
    out = tmp_path / "metrics.json"
    code = main(
        [
            str(tmp_path / "data"),
            "--model",
            str(tiny_model),
            "--json",
            str(out),
            "--exclude",
            str(tmp_path / "exclude.txt"),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["n"] == 5 and doc["excluded"] == 1
    assert {"accuracy", "macro_f1", "per_class", "confusion", "ece"} <= set(doc)
    assert 0 <= doc["ece"] <= 1
    assert np.array(doc["confusion"]).sum() == 5
    assert Image.open(out.with_suffix(".png")).size[0] > 300
    printed = capsys.readouterr().out
    assert "accuracy=" in printed and "ECE=" in printed


def test_empty_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "No images found" in capsys.readouterr().err
