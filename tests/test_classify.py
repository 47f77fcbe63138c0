"""The local classifier with real (tiny) transformers ViTs built here."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from emotion.backends.local import LocalClassifier, load_model, resolve
from emotion.errors import ModelError
from emotion.labels import LABELS
from tests.conftest import make_tiny_vit


def faces(n, size=40, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size + i, size + i, 3), dtype=np.uint8)) for i in range(n)]


def test_probabilities_cover_the_seven_labels(tiny_model):
    probs = LocalClassifier(str(tiny_model), "cpu")(faces(3))
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)


def test_empty_batch(tiny_model):
    assert LocalClassifier(str(tiny_model), "cpu")([]).shape == (0, 7)


def test_batched_equals_one_by_one(tiny_model):
    clf = LocalClassifier(str(tiny_model), "cpu")
    crops = faces(8)
    batched = clf(crops)
    single = np.concatenate([clf([c]) for c in crops])
    np.testing.assert_allclose(batched, single, atol=1e-4)


def test_shuffled_and_respelled_labels_map_to_the_same_emotions(tiny_model, tmp_path):
    """A model whose outputs are permuted and renamed (like dima806's) must give identical canonical scores."""
    from transformers import ViTForImageClassification

    perm = [4, 1, 0, 6, 2, 5, 3]  # output i of the shuffled model is canonical label perm[i]
    names = {"sad": "Sad", "angry": "anger", "happy": "happiness", "neutral": "Neutral"}
    id2label = {i: names.get(LABELS[c], LABELS[c]) for i, c in enumerate(perm)}
    model = ViTForImageClassification.from_pretrained(tiny_model)
    with torch.no_grad():
        model.classifier.weight.copy_(model.classifier.weight[perm])
        model.classifier.bias.copy_(model.classifier.bias[perm])
    model.config.id2label = id2label
    model.config.label2id = {v: k for k, v in id2label.items()}
    shuffled = tmp_path / "shuffled"
    model.save_pretrained(shuffled)
    (shuffled / "preprocessor_config.json").write_text((tiny_model / "preprocessor_config.json").read_text())

    crops = faces(4)
    reference = LocalClassifier(str(tiny_model), "cpu")(crops)
    probs = LocalClassifier(str(shuffled), "cpu")(crops)
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert not np.allclose(reference, reference[:, ::-1])  # the scores really differ per label


def test_models_are_cached_per_model_device_dtype(tiny_model):
    a = load_model(str(tiny_model), "cpu")
    assert load_model(str(tiny_model), torch.device("cpu")) is a
    assert load_model(str(tiny_model), "cpu", torch.float64) is not a


def test_model_with_unmappable_labels_is_refused(tmp_path):
    folder = make_tiny_vit(tmp_path / "m", {i: f"LABEL_{i}" for i in range(7)})
    with pytest.raises(ModelError, match="cannot be mapped onto the seven emotions"):
        LocalClassifier(str(folder), "cpu")


def test_pickled_weights_are_not_loaded(tmp_path):
    folder = make_tiny_vit(tmp_path / "m", dict(enumerate(LABELS)))
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="Could not load"):
        LocalClassifier(str(folder), "cpu")


@pytest.mark.parametrize("name", ["../etc", "not a model id!", "a/b/c", "/no/such/folder", "x" * 200])
def test_invalid_model_names(name):
    with pytest.raises(ModelError, match="neither an existing model folder nor a Hugging Face model id"):
        resolve(name)


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelError, match="no config.json"):
        resolve(str(tmp_path))


def test_hub_model_that_cannot_be_downloaded_gives_a_clear_message():
    with pytest.raises(ModelError, match="Could not load the model 'dima806/facial_emotions_image_detection'"):
        LocalClassifier("dima806/facial_emotions_image_detection", "cpu")


def test_preprocessing_config_is_read_from_the_model(tmp_path):
    """Greyscale models get greyscale crops: a colour face and its grey copy give the same scores."""
    folder = make_tiny_vit(tmp_path / "grey", dict(enumerate(LABELS)), image_size=48)
    config = json.loads((folder / "config.json").read_text())
    config["emotion_preprocess"] = {"grayscale": True, "source_size": 48, "flip_average": True}
    (folder / "config.json").write_text(json.dumps(config))
    clf = LocalClassifier(str(folder), "cpu")
    colour = faces(1, size=96)[0]
    grey = colour.convert("L").convert("RGB")
    np.testing.assert_allclose(clf([colour]), clf([grey]), atol=1e-5)
    mirrored = colour.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    np.testing.assert_allclose(clf([colour]), clf([mirrored]), atol=1e-5)


def test_unknown_dtype_is_a_clear_error(tiny_model):
    with pytest.raises(ModelError, match="Unknown dtype 'float8'"):
        LocalClassifier(str(tiny_model), "cpu", "float8")
