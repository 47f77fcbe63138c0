"""The bundled model: a standard Hugging Face folder that loads offline and reads faces sensibly."""

import json

import numpy as np
import pytest
from transformers import AutoModelForImageClassification

import emotion
from emotion.labels import LABELS
from emotion.settings import BUNDLED_MODEL_DIR
from tests.conftest import FER, ROOT, photo


def test_folder_is_small_safetensors_with_the_canonical_labels():
    files = {p.name for p in BUNDLED_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "metrics.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    assert (BUNDLED_MODEL_DIR / "model.safetensors").stat().st_size < 10 * 1024 * 1024
    config = json.loads((BUNDLED_MODEL_DIR / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(7)] == list(LABELS)
    assert config["emotion_preprocess"] == {"grayscale": True, "source_size": 48, "flip_average": True}


def test_loads_offline_with_the_auto_classes():
    import emotion.models.vit  # noqa: F401  registers the architecture, as emotion.backends.local does

    model = AutoModelForImageClassification.from_pretrained(BUNDLED_MODEL_DIR, use_safetensors=True)
    assert type(model).__name__ == "HybridViTForImageClassification"
    assert sum(p.numel() for p in model.parameters()) < 5_000_000


def test_astronaut_is_happy():
    result = emotion.analyze(photo("skimage_astronaut.png"))
    assert result.model == "bundled" and len(result.faces) == 1
    assert result.faces[0].label == "happy"


def test_publictest_accuracy_matches_the_committed_figure():
    """Recomputed, not read back: the bundled model on all 3,589 FER-2013 PublicTest images, as face crops."""
    from emotion.evaluate import find_images, predict

    data = FER / "publictest"
    if not data.is_dir():
        pytest.skip(f"{data} is not available")
    items = find_images(data)
    assert len(items) == 3589
    probs = predict(items, "bundled", detect=False)
    truth = np.array([label for _, label in items])
    accuracy = float(np.mean(probs.argmax(1) == truth))
    committed = json.loads((ROOT / "docs" / "publictest.json").read_text())
    assert committed["n"] == len(items) and committed["model"] == "bundled" and committed["detect"] is False
    assert accuracy == pytest.approx(committed["accuracy"], abs=0.002)
    assert accuracy >= 0.60
