"""Why this emotion? A heatmap per face of the image regions that drove the predicted class.

For ViT-family models (a ``patch_embeddings`` module giving one token per image patch) the
relevance of each patch token is gradient x activation of the predicted class's logit
(positive part), so it follows the exact transformer computation rather than attention
weights alone. Any other model falls back to input-gradient saliency. All faces of a
request are explained in one batched forward and backward pass.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from emotion.classify import LocalClassifier


def _patch_module(model: torch.nn.Module):
    for name, module in model.named_modules():
        if name.endswith("patch_embeddings"):
            return module
    return None


def explain(classifier: LocalClassifier, crops: list[Image.Image]) -> list[np.ndarray]:
    """One heatmap per crop, (height, width) of that crop, scaled to 0..1 (1 = most relevant)."""
    if not crops:
        return []
    m = classifier.loaded
    pixel_values = classifier.preprocess(crops)[: len(crops)]  # without the mirrored copies
    pixel_values = pixel_values.detach().clone().requires_grad_(True)
    captured = {}
    patches = _patch_module(m.model)

    def keep(_module, _inputs, output):
        captured["tokens"] = output

    handle = patches.register_forward_hook(keep) if patches is not None else None
    try:
        with torch.enable_grad():
            logits = m.model(pixel_values=pixel_values).logits
            predicted = logits.float().argmax(-1)
            target = logits.gather(1, predicted[:, None]).sum()
            tokens = captured.get("tokens")
            if (
                isinstance(tokens, torch.Tensor)
                and tokens.dim() == 3
                and math.isqrt(tokens.shape[1]) ** 2 == tokens.shape[1]
            ):
                (grad,) = torch.autograd.grad(target, tokens)
                relevance = (grad * tokens).float().sum(-1).clamp(min=0)  # (b, n)
                side = math.isqrt(tokens.shape[1])
                maps = relevance.view(-1, 1, side, side)
            else:
                (grad,) = torch.autograd.grad(target, pixel_values)
                maps = (grad * pixel_values).float().abs().sum(1, keepdim=True)
                maps = F.avg_pool2d(maps, 5, stride=1, padding=2)
    finally:
        if handle is not None:
            handle.remove()
    heatmaps = []
    for crop, heat in zip(crops, maps.detach()):
        heat = F.interpolate(heat[None], size=(crop.height, crop.width), mode="bilinear", align_corners=False)[0, 0]
        heat = heat - heat.min()
        heatmaps.append((heat / heat.max()).cpu().numpy() if heat.max() > 0 else heat.cpu().numpy())
    return heatmaps


def explain_faces(picture: Image.Image, result, model: str, settings) -> list[tuple[Image.Image, np.ndarray]]:
    """(face crop, heatmap) for every face of an analysis, with the model that classified it."""
    from emotion.crop import crop_faces
    from emotion.pipeline import get_classifier

    crops = crop_faces(picture, [f.box for f in result.faces], settings.margin)
    return list(zip(crops, explain(get_classifier("local", model, settings), crops)))
