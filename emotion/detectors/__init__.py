"""Face detectors: each is a small module with ``build(settings) -> Detector``, found by name here.

Adding a detector is one module in this folder plus one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from emotion.errors import InputError

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in pixels of the image given to the detector
    score: float  # the detector's face probability
    landmarks: tuple[tuple[float, float], ...] = ()  # eyes, nose, mouth corners where the detector gives them

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


class Detector(Protocol):
    def __call__(self, image: Image.Image) -> list[Detection]:
        """Every face in an upright RGB image; an empty list when there is none. Safe to call from many threads."""
        ...


_MODULES = {
    "mtcnn": "emotion.detectors.mtcnn",
}
_built: dict[tuple, Detector] = {}
_lock = threading.Lock()


def get_detector(name: str, settings) -> Detector:
    """The detector ``name``, built once per name and detection settings."""
    if name not in _MODULES:
        raise InputError(f"Unknown detector '{name}': use one of {', '.join(_MODULES)}.")
    key = (
        name,
        settings.device,
        settings.min_face_size,
        settings.min_detection_score,
        settings.detect_max_side,
        settings.detect_max_candidates,
        settings.detect_threads,  # threads per network run; 0: one, the work spread over lanes
        settings.concurrency,  # detections at once (emotion.detectors.mtcnn runs them on that many threads)
        getattr(settings, "detect_pyramid_pixels", 250_000),  # P-Net's largest scale at most this many pixels
    )
    # Building MTCNN takes about a second (each thread compiles its copy of the networks; the first build ever
    # also exports them to ONNX: a second or two more).
    with _lock:
        if key not in _built:
            _built[key] = importlib.import_module(_MODULES[name]).build(settings)
        return _built[key]
