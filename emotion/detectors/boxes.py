"""MTCNN's box arithmetic and non-maximum suppression, step for step as facenet-pytorch and torchvision do them.

The formulas are MTCNN's (P-Net's 12-px windows on a stride-2 grid, offsets relative to the box size, boxes
squared around their centre); each is written here in the same float32 steps as facenet-pytorch's helpers
and torchvision's ``nms``, so the boxes are theirs to the bit (tests/test_detect.py compares them). Why not
import those helpers: importing torchvision (which facenet-pytorch's helpers do) costs about two seconds of
start-up on two cores, for a few lines of arithmetic; the stock networks and weights are still used as they are.
"""

from __future__ import annotations

import numpy as np
import torch

STRIDE = 2  # P-Net's output grid, in pixels of the scaled image
CELL = 12  # P-Net's window side, in pixels of the scaled image
BLOCK = 256  # boxes whose overlaps nms computes at once (at most 256 x n floats)


def windows(reg: torch.Tensor, probs: torch.Tensor, scale: float, threshold: float) -> torch.Tensor:
    """P-Net's maps for one image, (1, 4, h, w) offsets and (1, h, w) face probabilities, -> (n, 9) rows of
    x1, y1, x2, y2 (the window in photo pixels), score and the four offsets, for each cell >= threshold.

    In numpy (the same float32 steps as facenet-pytorch's torch code, so the same numbers): it runs once per
    pyramid level, about ten times per photo, and torch's per-operation cost made it 3x slower on small maps."""
    p = probs.detach().cpu().numpy()
    _, rows, cols = np.nonzero(p >= threshold)  # row-major, as torch's nonzero
    out = np.empty((len(rows), 9), np.float32)
    for k, (cells, cell_end) in enumerate([(cols, 1), (rows, 1), (cols, CELL), (rows, CELL)]):
        out[:, k] = np.floor((STRIDE * cells.astype(np.float32) + cell_end) / scale)
    out[:, 4] = p[0, rows, cols]
    out[:, 5:] = reg.detach().cpu().numpy()[0][:, rows, cols].T
    return torch.from_numpy(out).to(reg.device)


def regress(boxes: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The boxes moved by the network's offsets (fractions of the box's side, counted inclusive: x2 - x1 + 1);
    columns after the fourth are kept as they are."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    moved = torch.stack(
        [
            boxes[:, 0] + offsets[:, 0] * w,
            boxes[:, 1] + offsets[:, 1] * h,
            boxes[:, 2] + offsets[:, 2] * w,
            boxes[:, 3] + offsets[:, 3] * h,
        ],
        dim=1,
    )
    return torch.cat([moved, boxes[:, 4:]], dim=1)


def square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square on its longer side, about the same centre (other columns kept)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.max(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.cat([torch.stack([x1, y1, x1 + side, y1 + side], dim=1), boxes[:, 4:]], dim=1)


def clip(boxes: torch.Tensor, w: int, h: int) -> tuple[np.ndarray, ...]:
    """Integer y1, y2, x1, x2 of each box (truncated), clipped to 1..h and 1..w (1-based, as MTCNN's crops
    count them: the crop is rows y1 - 1 to y2 and columns x1 - 1 to x2)."""
    b = boxes[:, :4].trunc().int().cpu().numpy()
    x, y = np.maximum(b[:, 0], 1), np.maximum(b[:, 1], 1)
    ex, ey = np.minimum(b[:, 2], w), np.minimum(b[:, 3], h)
    return y, ey, x, ex


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression (torchvision.ops.nms's): indices of the boxes kept, best score first;
    a box goes when its intersection over union with a better kept box exceeds ``threshold``. Equal scores
    keep their input order (a stable sort).

    The overlaps are computed a block of BLOCK boxes at a time, only for boxes still in the running, against
    every later box; each block's rows become bit masks (Python integers), so the greedy pass costs one
    integer operation per box: 2-3x torchvision's C++ time for a few hundred boxes, where a plain loop over
    numpy rows was 4-6x.
    """
    b = boxes.detach().cpu().numpy().astype(np.float32, copy=False)
    order = np.argsort(-scores.detach().cpu().numpy(), kind="stable")
    x1, y1, x2, y2 = (np.ascontiguousarray(b[order, k]) for k in range(4))
    areas = (x2 - x1) * (y2 - y1)
    n = len(order)
    keep = []
    removed = 0  # bit j set: the j-th box in score order is suppressed
    for start in range(0, n, BLOCK):
        live = [i for i in range(start, min(n, start + BLOCK)) if not (removed >> i) & 1]
        if not live:
            continue
        over = _overlaps(x1, y1, x2, y2, areas, np.array(live), slice(start, n)) > threshold
        masks = np.packbits(over, axis=1, bitorder="little")  # row r, bit j: overlaps box start + j
        for row, i in enumerate(live):
            if (removed >> i) & 1:
                continue
            keep.append(i)
            removed |= int.from_bytes(masks[row].tobytes(), "little") << start
    return torch.from_numpy(order[keep]).to(boxes.device)


def _overlaps(x1, y1, x2, y2, areas, rows: np.ndarray, cols: slice) -> np.ndarray:
    """(len(rows), n) intersection over union of the boxes ``rows`` with the boxes ``cols``, in float32 as
    torchvision computes it."""
    w = np.maximum(np.float32(0), np.minimum(x2[rows, None], x2[cols]) - np.maximum(x1[rows, None], x1[cols]))
    h = np.maximum(np.float32(0), np.minimum(y2[rows, None], y2[cols]) - np.maximum(y1[rows, None], y1[cols]))
    inter = w * h
    return inter / (areas[rows, None] + areas[cols] - inter)


def nms_min(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """MTCNN's last suppression: overlap counted over the smaller box's area (pixel-inclusive sides), best
    score first; boxes overlapping a kept one by more than ``threshold`` go."""
    b = boxes.detach().cpu().numpy()
    s = scores.detach().cpu().numpy()
    x1, y1, x2, y2 = (b[:, k] for k in range(4))
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    left = np.argsort(s)  # ascending: the best is last (facenet-pytorch's order, ties included)
    keep = []
    while left.size:
        i, left = left[-1], left[:-1]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[left]) - np.maximum(x1[i], x1[left]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[left]) - np.maximum(y1[i], y1[left]) + 1)
        left = left[w * h / np.minimum(areas[i], areas[left]) <= threshold]
    return torch.as_tensor(np.array(keep, dtype=np.int64), device=boxes.device)
