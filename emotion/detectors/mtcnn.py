"""MTCNN with facenet-pytorch's three networks (their weights ship inside its wheel), run in stages here.

The stages are facenet-pytorch's own (its helper functions do the box arithmetic); what differs is a
budget: after the first and the second stage only the ``max_candidates`` best-scoring boxes go on.
Stock MTCNN sends every candidate through the later networks, so a canvas of hundreds of tiny faces
costs tens of seconds; here it costs at most two bounded batches. Below the budget the result is the
same as stock MTCNN's.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)
from PIL import Image
from torchvision.ops import nms

from emotion.detectors import Detection
from emotion.device import pick_device

log = logging.getLogger(__name__)

THRESHOLDS = (0.6, 0.7, 0.7)  # facenet-pytorch's defaults for the three stages
FACTOR = 0.709  # image pyramid: each scale is this fraction of the previous one


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - 127.5) * 0.0078125


class MTCNNDetector:
    """Photos larger than ``max_side`` are detected on a downscaled copy (MTCNN's image pyramid makes big
    inputs slow) and the boxes are mapped back; ``min_face_size`` is in pixels of that copy.

    The networks are only read during inference, so request threads share one instance with no lock:
    two requests detect at the same time.
    """

    def __init__(
        self,
        device: torch.device,
        min_face_size: int = 20,
        min_score: float = 0.9,
        max_side: int = 1600,
        max_candidates: int = 400,
    ):
        from facenet_pytorch import MTCNN

        log.info("loading MTCNN on %s", device)
        # min_face_size counts pixels of the image MTCNN sees: on a downscaled 12 MP photo the smallest face
        # found is larger in the original, which costs little (faces much under 48 px carry too little detail
        # for the classifier anyway) and keeps big photos fast. MTCNN's first stage needs a 12-px window.
        self.net = MTCNN(keep_all=True, min_face_size=max(12, min_face_size), post_process=False, device=device)
        self.device = device
        self.min_face_size = max(12, min_face_size)
        self.min_score = min_score
        self.max_side = max_side
        self.max_candidates = max_candidates

    def __call__(self, image: Image.Image) -> list[Detection]:
        w, h = image.size
        scale = min(1.0, self.max_side / max(w, h))
        small = image if scale == 1.0 else image.resize((round(w * scale), round(h * scale)), Image.BILINEAR)
        if min(small.size) < 12:
            return []
        pixels = torch.from_numpy(np.asarray(small.convert("RGB"), dtype=np.uint8).copy())
        # contiguous NCHW: the convolutions are about 2x slower on the permuted (channels-last) view.
        pixels = pixels.to(self.device).permute(2, 0, 1).unsqueeze(0).float().contiguous()
        with torch.inference_mode():
            boxes, points = self.stages(pixels)
        found = []
        for box, pts in zip(boxes / scale, points / scale):
            prob = float(box[4])
            if prob < self.min_score:
                continue
            x1, y1, x2, y2 = (float(v) for v in box[:4])
            clipped = (max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2))
            if clipped[2] - clipped[0] < 1 or clipped[3] - clipped[1] < 1:
                continue
            found.append(Detection(clipped, prob, tuple((float(x), float(y)) for x, y in pts)))
        return found

    def stages(self, pixels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(n, 5) boxes with scores and (n, 5, 2) landmarks, for one (1, 3, H, W) float image."""
        h, w = pixels.shape[2:]
        boxes = self._propose(pixels, h, w)
        if len(boxes):
            boxes = self._refine(pixels, boxes, h, w)
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        return self._output(pixels, boxes, h, w)

    def _propose(self, pixels: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Stage 1: P-Net over the image pyramid -> squared candidate boxes, best first, at most the budget."""
        scale = 12.0 / self.min_face_size
        side = min(h, w) * scale
        found = []
        while side >= 12:
            resized = imresample(pixels, (int(h * scale + 1), int(w * scale + 1)))
            reg, probs = self.net.pnet(_normalise(resized))
            boxes, _ = generateBoundingBox(reg, probs[:, 1], scale, THRESHOLDS[0])
            found.append(boxes[nms(boxes[:, :4], boxes[:, 4], 0.5)])
            scale *= FACTOR
            side *= FACTOR
        if not found:
            return pixels.new_zeros((0, 5))
        boxes = torch.cat(found)
        # nms returns indices best first: the slice keeps the highest-scoring candidates.
        boxes = boxes[nms(boxes[:, :4], boxes[:, 4], 0.7)][: self.max_candidates]
        width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        regressed = torch.stack(
            [
                boxes[:, 0] + boxes[:, 5] * width,
                boxes[:, 1] + boxes[:, 6] * height,
                boxes[:, 2] + boxes[:, 7] * width,
                boxes[:, 3] + boxes[:, 8] * height,
                boxes[:, 4],
            ],
            dim=1,
        )
        return rerec(regressed)

    def _refine(self, pixels: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Stage 2: R-Net on 24x24 crops; survivors regressed and squared, at most the budget."""
        boxes, crops = _crops(pixels, boxes, h, w, 24)
        if not len(boxes):
            return boxes
        reg, probs = self.net.rnet(_normalise(crops))
        keep = probs[:, 1] > THRESHOLDS[1]
        boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        reg = reg[keep]
        pick = nms(boxes[:, :4], boxes[:, 4], 0.7)[: self.max_candidates]
        return rerec(bbreg(boxes[pick], reg[pick]))

    def _output(self, pixels: torch.Tensor, boxes: torch.Tensor, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3: O-Net on 48x48 crops -> final boxes, scores and five landmarks."""
        boxes, crops = _crops(pixels, boxes, h, w, 48)
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        reg, marks, probs = self.net.onet(_normalise(crops))
        keep = probs[:, 1] > THRESHOLDS[2]
        boxes = torch.cat([boxes[keep, :4], probs[keep, 1:2]], dim=1)
        reg, marks = reg[keep], marks[keep]
        # Landmarks come relative to the box before its final regression (as in facenet-pytorch).
        bw = (boxes[:, 2] - boxes[:, 0] + 1).unsqueeze(1)
        bh = (boxes[:, 3] - boxes[:, 1] + 1).unsqueeze(1)
        xs = bw * marks[:, :5] + boxes[:, 0:1] - 1
        ys = bh * marks[:, 5:10] + boxes[:, 1:2] - 1
        points = torch.stack([xs, ys], dim=2)
        boxes = bbreg(boxes, reg)
        pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], torch.zeros(len(boxes)), 0.7, "Min")
        return boxes[pick].cpu().numpy(), points[pick].cpu().numpy()


def _crops(pixels: torch.Tensor, boxes: torch.Tensor, h: int, w: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The boxes that overlap the image, and their regions resized to size x size."""
    y, ey, x, ex = pad(boxes, w, h)
    valid = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    if not valid:
        return boxes[:0], pixels.new_zeros((0, 3, size, size))
    crops = [imresample(pixels[:, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]], (size, size)) for k in valid]
    return boxes[valid], torch.cat(crops)


def build(settings) -> MTCNNDetector:
    return MTCNNDetector(
        pick_device(settings.device),
        settings.min_face_size,
        settings.min_detection_score,
        settings.detect_max_side,
        settings.detect_max_candidates,
    )
