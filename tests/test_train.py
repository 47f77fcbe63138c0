"""The training script: one tiny epoch on CPU on a few dozen real FER-2013 images."""

import csv
import json
import shutil

import pytest
import torch
from PIL import Image

from emotion.backends.local import LocalClassifier
from emotion.training.train import main
from tests.conftest import FER, photo


@pytest.fixture
def small_fer(tmp_path):
    if not (FER / "labels.csv").exists():
        pytest.skip("FER-2013 is not available")
    rows = list(csv.DictReader(open(FER / "labels.csv", newline="")))
    picked = []
    for split, per_class in (("train", 6), ("publictest", 2)):
        for label in ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"):
            picked += [r for r in rows if r["split"] == split and r["fer2013_label"] == label][:per_class]
    root = tmp_path / "fer"
    for r in picked:
        (root / r["path"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FER / r["path"], root / r["path"])
    with open(root / "labels.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    return root


TINY = [
    "--batch-size",
    "16",
    "--stem-width",
    "8",
    "--stage-channels",
    "8",
    "16",
    "--stage-blocks",
    "1",
    "1",
    "--stage-strides",
    "2",
    "2",
    "--hidden-size",
    "32",
    "--layers",
    "1",
    "--heads",
    "2",
    "--intermediate-size",
    "64",
    "--warmup-epochs",
    "1",
]


def test_one_tiny_epoch_writes_a_loadable_model_and_resumes(small_fer, tmp_path):
    out = tmp_path / "model"
    common = [
        "--data",
        str(small_fer),
        "--pack",
        str(tmp_path / "pack.npz"),
        "--state",
        str(tmp_path / "state"),
        "--out",
        str(out),
        *TINY,
        # One tiny teacher: the student is distilled from it, as the bundled model is from three.
        "--teachers",
        "1",
        "--teacher-epochs",
        "1",
        "--teacher-width",
        "4",
    ]
    main([*common, "--epochs", "1"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["publictest"]["n"] == 14 and 0 <= metrics["publictest"]["accuracy"] <= 1
    assert len(metrics["teachers"]) == 1 and metrics["teacher_ensemble_publictest"]["n"] == 14
    assert 0 <= metrics["publictest"]["ece"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["emotion_calibration"]["temperature"] == metrics["temperature"]
    assert metrics["command"].startswith("python -m emotion.training --data")
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "preprocessor_config.json"}
    assert json.loads((out / "config.json").read_text())["id2label"]["3"] == "happy"
    probs = LocalClassifier(str(out), "cpu")([Image.open(photo("codait_bryan.png"))])
    assert probs.shape == (1, 7)
    # A second run with more epochs continues from the saved state instead of starting over.
    main([*common, "--epochs", "2"])
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_fine_tuning_starts_from_a_model_folder(small_fer, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--data", str(small_fer), "--pack", str(tmp_path / "pack.npz"), *TINY, "--epochs", "1", "--teachers", "0"]
    main([*common, "--state", str(tmp_path / "s1"), "--out", str(first)])
    main([*common, "--state", str(tmp_path / "s2"), "--out", str(second), "--init", str(first), "--lr", "0"])
    # With a learning rate of 0 the weights stay those of the first model (batch-norm statistics aside).
    a = LocalClassifier(str(first), "cpu").loaded.model
    b = LocalClassifier(str(second), "cpu").loaded.model
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert torch.equal(a.vit.embeddings.position_embeddings, b.vit.embeddings.position_embeddings)
    assert json.loads((second / "metrics.json").read_text())["train_config"]["init"] == str(first)
