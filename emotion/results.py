"""Typed results: small frozen dataclasses, turned into plain dicts (the API's JSON) here only."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from emotion.labels import LABELS


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels of the upright input image
    detection_score: float
    scores: dict[str, float]  # all seven labels, summing to 1
    above_threshold: tuple[str, ...]  # labels at or above the threshold, most likely first
    landmarks: tuple[tuple[float, float], ...] = ()
    crop_box: tuple[int, int, int, int] | None = None  # the square region that was classified
    heatmap: np.ndarray | None = field(default=None, compare=False, repr=False)  # over crop_box, 0..1
    uncertain: bool = False  # a weak answer: see Settings.uncertain_below and uncertain_margin

    @property
    def label(self) -> str:
        return max(self.scores, key=self.scores.get)

    @property
    def confidence(self) -> float:
        return self.scores[self.label]

    def to_dict(self) -> dict:
        return {
            "box": list(self.box),
            "detection_score": round(self.detection_score, 4),
            "label": self.label,
            "scores": {k: self.scores[k] for k in LABELS},
            "above_threshold": list(self.above_threshold),
            "uncertain": self.uncertain,
        }


@dataclass(frozen=True)
class Analysis:
    faces: tuple[Face, ...]
    model: str
    backend: str
    image_size: tuple[int, int]  # width, height after EXIF orientation
    timing_ms: dict[str, float] = field(default_factory=dict)
    faces_dropped: int = 0  # faces beyond Settings.max_faces (the smallest ones)
    image: Image.Image | None = field(default=None, compare=False, repr=False)  # the upright RGB input

    @property
    def message(self) -> str:
        n = len(self.faces)
        if n == 0:
            return "No face found in this image. Try a photo where faces are larger, frontal and well lit."
        text = f"Found {n} face{'s' if n != 1 else ''}."
        if self.faces_dropped:
            text += f" {self.faces_dropped} smaller face(s) were skipped: the limit is {n} per image."
        return text

    def to_dict(self) -> dict:
        return {
            "faces": [f.to_dict() for f in self.faces],
            "model": self.model,
            "backend": self.backend,
            "image_size": list(self.image_size),
            "timing_ms": {k: round(v, 1) for k, v in self.timing_ms.items()},
            "faces_dropped": self.faces_dropped,
            "message": self.message,
        }
