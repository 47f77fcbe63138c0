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


class Backend(Protocol):
    name: str  # the model as the caller named it
    backend: str  # the registry name: "local", "remote"

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        """(len(crops), 7) probabilities in the canonical label order (emotion.labels.LABELS)."""
        ...


_MODULES = {
    "local": "emotion.backends.local",
    "remote": "emotion.backends.remote",
}


def get_backend(name: str, model: str, settings, token: str | None = None) -> Backend:
    if not isinstance(name, str) or name not in _MODULES:
        raise InputError(f"Unknown backend {name!r}: use {' or '.join(repr(n) for n in _MODULES)}.")
    return importlib.import_module(_MODULES[name]).build(model, settings, token)
