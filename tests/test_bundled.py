"""The bundled model: a standard Hugging Face folder that loads offline and reads faces sensibly."""

import json

from transformers import AutoModelForImageClassification

import emotion
from emotion.labels import LABELS
from emotion.settings import BUNDLED_MODEL_DIR
from tests.conftest import photo


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


def test_metrics_were_selected_on_publictest_only():
    metrics = json.loads((BUNDLED_MODEL_DIR / "metrics.json").read_text())
    assert metrics["publictest"]["n"] == 3589
    assert metrics["command"].startswith("python -m emotion.train")
