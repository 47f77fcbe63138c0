"""Why this emotion? A heatmap per face: how much hiding each region lowers the predicted emotion.

Occlusion sensitivity: for a grid of windows over the face crop, a copy of the crop with that window
filled grey is classified, and the drop of the predicted emotion's probability is the window's
relevance. It needs only forward passes through the backend, so it works for any local model and dtype,
never touches the shared model (no hooks, no gradients: safe with many request threads), and it measures
directly what a deletion test checks. All occluded copies of all faces go through the backend in a few
large batches.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw


def occluded_copies(crop: Image.Image, grid: int) -> list[Image.Image]:
    """grid x grid copies of ``crop``, each with a grey square (a third of the side) over one grid cell."""
    w, h = crop.size
    side_x, side_y = w / grid, h / grid
    copies = []
    for row in range(grid):
        for col in range(grid):
            cx, cy = (col + 0.5) * side_x, (row + 0.5) * side_y
            copy = crop.copy()
            ImageDraw.Draw(copy).rectangle([cx - side_x, cy - side_y, cx + side_x, cy + side_y], fill=(128, 128, 128))
            copies.append(copy)
    return copies


def explain(backend, crops: list[Image.Image], grid: int = 6, batch: int = 256) -> list[np.ndarray]:
    """One heatmap per crop, (height, width) of that crop, scaled to 0..1 (1 = most relevant)."""
    if not crops:
        return []
    base = backend(crops)
    predicted = base.argmax(1)
    copies = [c for crop in crops for c in occluded_copies(crop, grid)]
    probs = np.concatenate([backend(copies[i : i + batch]) for i in range(0, len(copies), batch)])
    probs = probs.reshape(len(crops), grid * grid, -1)
    heatmaps = []
    for k, crop in enumerate(crops):
        drop = base[k, predicted[k]] - probs[k, :, predicted[k]]
        heat = torch.from_numpy(np.clip(drop, 0, None).reshape(1, 1, grid, grid)).float()
        heat = F.interpolate(heat, size=(crop.height, crop.width), mode="bilinear", align_corners=False)[0, 0]
        heat = heat - heat.min()
        heatmaps.append((heat / heat.max()).numpy() if heat.max() > 0 else heat.numpy())
    return heatmaps
