"""Why this emotion? A heatmap per face: how much hiding each region lowers the predicted emotion.

Occlusion sensitivity: for a grid of overlapping windows over the face, a copy of the face with that
window filled grey is classified, and the drop of the predicted emotion's probability is the window's
relevance; a pixel's heat is the mean drop of the windows that cover it. It needs only forward passes
through the backend, so it works for any local model and dtype, never touches the shared model (no
hooks, no gradients: safe with many request threads), and it measures directly what a deletion test
checks. All occluded copies of all faces go through the backend in batches of ``batch``.

Two choices come from a deletion-curve test on the shared photos (tests/test_explain.py, 13 faces):

- Windows a third of the side, centred on an 8 x 8 grid (so they overlap: a stride of an eighth).
  Hiding the top 5 to 50 % of a face as ranked by this map lowers the predicted emotion more than
  hiding the same share ranked by a fixed Gaussian over the mouth (deletion AUC 0.23 vs 0.28, lower
  on 10 of 13 faces); the old 6 x 6 grid did not (0.26, 6 of 13). Grids of 7 to 10 with windows of
  0.3 to 0.375 of the side all measured 0.22 to 0.24: the choice is not a lucky spike. The pipeline
  passes ``settings.explain_grid``, which should therefore be 8.
- The occlusion happens on a copy of the face already reduced to the model's input size (48 x 48 for
  the bundled model), not on the full crop: the model sees nearly the same pixels, and preparing
  hundreds of copies of a 1000-pixel crop cost more than classifying them (3 faces: about 0.9 s now,
  2 s before, on 2 busy CPU cores).

Grey (128, the middle of the range that the processors normalise to zero) is the fill; the test hides
with each face's mean colour instead, so the heatmap is not tuned to the perturbation it is judged by.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

log = logging.getLogger(__name__)

FILL = 128  # grey: zero after the usual (x - 0.5) / 0.5 normalisation
WINDOW = 1 / 3  # side of an occluding window, as a fraction of the face's side


def work_size(backend, crop: Image.Image) -> tuple[int, int]:
    """(width, height) at which ``crop`` is occluded: the model's input side where the backend tells it."""
    loaded = getattr(backend, "loaded", None)
    side = getattr(loaded, "source_size", None)
    if not side:
        size = getattr(getattr(loaded, "processor", None), "size", None) or {}
        side = (size.get("height") or size.get("shortest_edge")) if isinstance(size, dict) else None
    return (int(side), int(side)) if side else crop.size


def windows(width: int, height: int, grid: int, window: float = WINDOW) -> np.ndarray:
    """(grid * grid, height, width) masks: squares ``window`` of the side, centred on a grid x grid lattice."""
    kx, ky = max(1, round(width * window)), max(1, round(height * window))
    masks = np.zeros((grid * grid, height, width), bool)
    for row in range(grid):
        for col in range(grid):
            x0 = round((col + 0.5) * width / grid - kx / 2)
            y0 = round((row + 0.5) * height / grid - ky / 2)
            masks[row * grid + col, max(0, y0) : y0 + ky, max(0, x0) : x0 + kx] = True
    return masks


def occluded_copies(face: Image.Image, masks: np.ndarray, fill: int = FILL) -> list[Image.Image]:
    """One copy of ``face`` per mask, with the masked pixels set to ``fill``."""
    pixels = np.repeat(np.asarray(face.convert("RGB"))[None], len(masks), 0)
    pixels[masks] = fill
    return [Image.fromarray(p) for p in pixels]


def explain(
    backend, crops: list[Image.Image], grid: int = 8, batch: int = 256, window: float = WINDOW
) -> list[np.ndarray]:
    """One heatmap per crop, (height, width) of that crop, scaled to 0..1 (1 = most relevant).

    ``grid`` x ``grid`` windows per face, each ``window`` of the side; ``batch`` copies per forward pass.
    """
    if not crops:
        return []
    start = time.perf_counter()
    faces = [crop.convert("RGB").resize(work_size(backend, crop), Image.BILINEAR) for crop in crops]
    masks = {face.size: windows(*face.size, grid, window) for face in faces}
    copies = [c for face in faces for c in occluded_copies(face, masks[face.size])]
    base = backend(faces)
    predicted = base.argmax(1)
    probs = np.concatenate([backend(copies[i : i + batch]) for i in range(0, len(copies), batch)])
    probs = probs.reshape(len(crops), grid * grid, -1)
    heatmaps = []
    for k, (crop, face) in enumerate(zip(crops, faces)):
        m = masks[face.size]
        drop = base[k, predicted[k]] - probs[k, :, predicted[k]]
        heat = np.tensordot(drop, m, 1) / np.maximum(m.sum(0), 1)  # mean drop of the windows over each pixel
        heat = torch.from_numpy(np.clip(heat, 0, None)[None, None]).float()
        heat = F.interpolate(heat, size=(crop.height, crop.width), mode="bilinear", align_corners=False)[0, 0]
        heat = heat - heat.min()
        heatmaps.append((heat / heat.max()).numpy() if heat.max() > 0 else heat.numpy())
    log.debug(
        "explained %d face(s) with %d occluded copies in %.0f ms",
        len(crops),
        len(copies),
        (time.perf_counter() - start) * 1000,
    )
    return heatmaps
