"""MTCNN from facenet-pytorch (its weights ship inside the wheel)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from emotion.detectors import Detection
from emotion.device import pick_device

log = logging.getLogger(__name__)


class MTCNNDetector:
    """Photos larger than ``max_side`` are detected on a downscaled copy (MTCNN's image pyramid makes big
    inputs slow) and the boxes are mapped back; ``min_face_size`` is in pixels of that copy.

    The networks are only read during inference, so request threads share one instance with no lock:
    two requests detect at the same time.
    """

    def __init__(self, device: torch.device, min_face_size: int = 20, min_score: float = 0.9, max_side: int = 1600):
        from facenet_pytorch import MTCNN

        log.info("loading MTCNN on %s", device)
        # min_face_size counts pixels of the image MTCNN sees: on a downscaled 12 MP photo the smallest face
        # found is larger in the original, which costs little (faces much under 48 px carry too little detail
        # for the classifier anyway) and keeps big photos fast. MTCNN's first stage needs a 12-px window.
        self.net = MTCNN(keep_all=True, min_face_size=max(12, min_face_size), post_process=False, device=device)
        self.min_score = min_score
        self.max_side = max_side

    def __call__(self, image: Image.Image) -> list[Detection]:
        w, h = image.size
        scale = min(1.0, self.max_side / max(w, h))
        small = image if scale == 1.0 else image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        if min(small.size) < 12:
            return []
        with torch.inference_mode():
            boxes, probs, points = self.net.detect(small, landmarks=True)
        if boxes is None:
            return []
        found = []
        for box, prob, pts in zip(np.asarray(boxes) / scale, probs, np.asarray(points) / scale):
            if prob is None or prob < self.min_score:
                continue
            x1, y1, x2, y2 = (float(v) for v in box)
            box = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            if box[2] - box[0] < 1 or box[3] - box[1] < 1:
                continue
            found.append(Detection(box, float(prob), tuple((float(x), float(y)) for x, y in pts)))
        return found


def build(settings) -> MTCNNDetector:
    return MTCNNDetector(
        pick_device(settings.device), settings.min_face_size, settings.min_detection_score, settings.detect_max_side
    )
