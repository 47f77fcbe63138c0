"""The project's own models in ONNX Runtime on the CPU: exported from the real folders, against their torch path."""

import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from emotion.backends import get_backend, onnx_local
from emotion.backends.local import LocalClassifier
from emotion.crop import crop_faces
from emotion.detectors import get_detector
from emotion.image import load_image
from emotion.settings import BUNDLED_MODEL_DIR, Settings
from tests.conftest import PHOTOS, photo


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTION_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "emotion" / "classifier-onnx"


def real_faces() -> list[Image.Image]:
    """MTCNN's crops from every shared photo, as the pipeline cuts them, plus two whole portraits."""
    settings = Settings(device="cpu")
    detector = get_detector("mtcnn", settings)
    crops = []
    for path in sorted(PHOTOS.glob("*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            image = load_image(path)
            crops += crop_faces(image, [d.box for d in detector(image)], settings.margin)
    return crops + [load_image(photo("codait_bryan.png")), load_image(photo("codait_luciano.png"))]


def test_the_bundled_model_runs_in_onnx_runtime_with_torchs_probabilities(cache):
    onnx = get_backend("local", "bundled", Settings())
    assert isinstance(onnx, onnx_local.OnnxClassifier) and onnx.name == "bundled" and onnx.backend == "local"
    crops = real_faces()
    assert len(crops) >= 10
    expected = LocalClassifier("bundled", "cpu")(crops)
    found = onnx(crops)
    np.testing.assert_allclose(found, expected, atol=1e-5)
    assert (found.argmax(1) == expected.argmax(1)).all()
    np.testing.assert_allclose(found.sum(1), 1, atol=1e-9)
    assert onnx([]).shape == (0, 7)


def test_the_export_is_cached_and_follows_the_folders_files(cache, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, folder)
    first = onnx_local.model_bytes(folder)
    assert len(list(cache.iterdir())) == 1

    def no_export(_):
        raise AssertionError("exported again")

    monkeypatch.setattr(onnx_local, "export", no_export)
    assert onnx_local.model_bytes(folder) == first  # read back, not exported

    retrained = tmp_path / "retrained"
    shutil.copytree(folder, retrained)
    config = json.loads((retrained / "config.json").read_text())
    config["emotion_calibration"]["temperature"] = 1.5  # another file: another fingerprint
    (retrained / "config.json").write_text(json.dumps(config))
    with pytest.raises(AssertionError, match="exported again"):
        onnx_local.model_bytes(retrained)
    monkeypatch.undo()
    crops = real_faces()[:4]
    found = onnx_local.OnnxClassifier("mine", retrained, Settings())(crops)
    np.testing.assert_allclose(found, LocalClassifier(str(retrained), "cpu")(crops), atol=1e-5)  # T = 1.5 applied
    assert not np.allclose(found, onnx_local.OnnxClassifier("mine", folder, Settings())(crops), atol=1e-3)


def test_an_unwritable_cache_still_classifies(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EMOTION_CACHE", str(blocker))
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, folder)  # a folder of its own: not already loaded by another test
    probs = onnx_local.OnnxClassifier("mine", folder, Settings())(real_faces()[:2])
    assert probs.shape == (2, 7)


def test_other_models_and_settings_stay_on_torch(tiny_model, cache):
    assert isinstance(get_backend("local", str(tiny_model), Settings()), LocalClassifier)  # a plain hub-style ViT
    assert isinstance(get_backend("local", "bundled", Settings(runtime="torch")), LocalClassifier)
    assert isinstance(get_backend("local", "bundled", Settings(dtype="bfloat16")), LocalClassifier)
    assert not onnx_local.usable("owner/model", Settings())  # a hub id: not a folder


def test_serving_the_bundled_model_imports_neither_transformers_nor_torchvision(tmp_path):
    """What the start-up gains: a first answer from the bundled model and MTCNN, in a fresh interpreter."""
    import subprocess

    code = (
        "import sys\n"
        "from emotion.pipeline import Pipeline\n"
        "from emotion.settings import Settings\n"
        f"result = Pipeline(Settings()).analyze({str(photo('nasa_apollo11_crew.jpg'))!r})\n"
        "assert len(result.faces) == 3, result\n"
        "print(sorted(m for m in ('transformers', 'torchvision', 'facenet_pytorch') if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "EMOTION_CACHE": str(tmp_path / "cache")}
    run = dict(capture_output=True, text=True, env=env, timeout=300, cwd=BUNDLED_MODEL_DIR.parents[2])
    first = subprocess.run([sys.executable, "-c", code], **run)
    assert first.returncode == 0, first.stderr
    # The first start exports (with torch and transformers); the next ones only load the cached files.
    again = subprocess.run([sys.executable, "-c", code], **run)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "[]"


def test_heatmaps_from_onnx_runtime_are_torchs(cache):
    from emotion.explain import explain

    crops = real_faces()[:2]
    onnx = get_backend("local", "bundled", Settings())
    found = explain(onnx, crops, grid=4, batch=8)
    expected = explain(LocalClassifier("bundled", "cpu"), crops, grid=4, batch=8)
    assert len(found) == 2 and [m.shape for m in found] == [m.shape for m in expected]
    for a, b in zip(found, expected):
        np.testing.assert_allclose(a, b, atol=1e-3)


def test_a_failing_export_falls_back_to_torch_once(cache, tmp_path, monkeypatch):
    folder = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, folder)
    calls = []

    def broken(_):
        calls.append(1)
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(onnx_local, "export", broken)
    for _ in range(2):
        clf = get_backend("local", str(folder), Settings())
        assert isinstance(clf, LocalClassifier)
        assert clf(real_faces()[:1]).shape == (1, 7)
    assert calls == [1]  # not exported again on the next request
