"""Face detection with facenet-pytorch's MTCNN (its weights ship inside the wheel)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Detection:
    box: Box  # x1, y1, x2, y2 in pixels of the image given to detect_faces
    score: float  # MTCNN's face probability
    landmarks: tuple[tuple[float, float], ...]  # eyes, nose, mouth corners

    @property
    def area(self) -> float:
        return max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1])


_lock = threading.Lock()


@lru_cache(maxsize=4)
def _mtcnn(device: str, min_face_size: int):
    from facenet_pytorch import MTCNN

    log.info("loading MTCNN on %s", device)
    return MTCNN(keep_all=True, min_face_size=min_face_size, post_process=False, device=torch.device(device))


def detect_faces(
    image: Image.Image,
    device: torch.device | str = "cpu",
    min_face_size: int = 20,
    min_score: float = 0.9,
    max_side: int = 1600,
) -> list[Detection]:
    """All faces in an RGB image, as a list (empty when there is none).

    Photos larger than ``max_side`` are detected on a downscaled copy (MTCNN's
    image pyramid makes big inputs slow) and the boxes are mapped back;
    ``min_face_size`` is in pixels of that copy.
    """
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    small = image if scale == 1.0 else image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    # MTCNN's first stage needs at least a 12-px window at the smallest scale.
    if min(small.size) < 12:
        return []
    # min_face_size counts pixels of the image MTCNN sees: on a downscaled 12 MP photo the smallest
    # face found is larger in the original, which costs little, since faces much under 48 px carry
    # too little detail for the classifier anyway, and it keeps big photos fast.
    detector = _mtcnn(str(device), max(12, min_face_size))
    with _lock, torch.inference_mode():  # MTCNN's networks are shared between request threads
        boxes, probs, points = detector.detect(small, landmarks=True)
    if boxes is None:
        return []
    found = []
    for box, prob, pts in zip(np.asarray(boxes) / scale, probs, np.asarray(points) / scale):
        if prob is None or prob < min_score:
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
        if box[2] - box[0] < 1 or box[3] - box[1] < 1:
            continue
        found.append(Detection(box, float(prob), tuple((float(x), float(y)) for x, y in pts)))
    return found
