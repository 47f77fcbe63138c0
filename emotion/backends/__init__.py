"""Classification backends: crops -> probabilities over the seven labels, found by name here.

Each is a small module with ``build(model, settings, token) -> Backend``; adding one is a module
in this folder plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np
from PIL import Image

from emotion.errors import InputError
from emotion.labels import LABELS


class Backend(Protocol):
    name: str  # the model as the caller named it
    backend: str  # the registry name: "local", "remote"

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        """(len(crops), 7) probabilities in the canonical label order (emotion.labels.LABELS)."""
        ...


def arrange(probs: np.ndarray, order, flip_average: bool) -> np.ndarray:
    """A local model's probabilities, (n, its labels), as every backend answers: each face's mirror image (the
    second half of the batch, when ``flip_average``) averaged in, and the columns put in the canonical order
    (``order``: the canonical index of each model output)."""
    if flip_average:
        probs = (probs[: len(probs) // 2] + probs[len(probs) // 2 :]) / 2
    out = np.zeros((len(probs), len(LABELS)), np.float64)
    out[:, list(order)] = probs
    return out


_MODULES = {
    "local": "emotion.backends.local",
    "remote": "emotion.backends.remote",
}


def get_backend(name: str, model: str, settings, token: str | None = None) -> Backend:
    if not isinstance(name, str) or name not in _MODULES:
        raise InputError(f"Unknown backend {name!r}: use {' or '.join(repr(n) for n in _MODULES)}.")
    return importlib.import_module(_MODULES[name]).build(model, settings, token)
