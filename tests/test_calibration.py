"""Calibration: ECE by hand, a fitted temperature that lowers it, and the temperature applied on load."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from emotion.backends.local import LocalClassifier
from emotion.calibration import ece, fit_temperature, main, view_probs


def test_ece_by_hand():
    truth = np.array([0, 0, 1, 1])
    # Two faces at 0.9 (both right), two at 0.6 (one right): 0.5 * |1 - 0.9| + 0.5 * |0.5 - 0.6| = 0.1
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4]])
    assert ece(probs, truth) == pytest.approx(0.1)


def test_overconfident_logits_get_a_temperature_above_one():
    rng = np.random.default_rng(0)
    n = 2000
    truth = torch.from_numpy(rng.integers(0, 7, n))
    # A model right 60% of the time, but with logits scaled to claim ~99% confidence.
    pred = torch.where(torch.rand(n, generator=torch.Generator().manual_seed(0)) < 0.6, truth, (truth + 1) % 7)
    logits = torch.nn.functional.one_hot(pred, 7).float() * 5.0
    logits = logits[:, None, :].repeat(1, 2, 1)  # two identical views
    t = fit_temperature(logits, truth)
    assert t > 1.5
    before = ece(view_probs(logits).numpy(), truth.numpy())
    after = ece(view_probs(logits, t).numpy(), truth.numpy())
    assert before > 0.3 and after < 0.05


def test_command_stores_the_temperature_and_the_classifier_applies_it(tiny_model, tmp_path, capsys):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    rng = np.random.default_rng(1)
    for label in ("angry", "happy", "sad"):
        (tmp_path / "data" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / "data" / label / f"{i}.png"
            )
    face = Image.open(tmp_path / "data" / "angry" / "0.png")
    before = LocalClassifier(str(folder), "cpu")([face])[0]
    assert main([str(folder), str(tmp_path / "data"), "--name", "test faces"]) == 0
    assert "temperature" in capsys.readouterr().out
    calibration = json.loads((folder / "config.json").read_text())["emotion_calibration"]
    assert calibration["fitted_on"] == "test faces" and 0.5 <= calibration["temperature"] <= 3
    # Forget the cached model so the folder is read again.
    from emotion.backends import local

    local._cache.clear()
    after = LocalClassifier(str(folder), "cpu")([face])[0]
    t = calibration["temperature"]
    logits = np.log(before)  # softmax is shift-invariant: log-probabilities stand in for the logits
    expected = np.exp(logits / t) / np.exp(logits / t).sum()
    assert after.argmax() == before.argmax()
    np.testing.assert_allclose(after, expected, atol=1e-5)
