"""Calibration: how far confidence matches accuracy (ECE), and a softmax temperature that closes the gap.

    python -m emotion.calibration MODEL_FOLDER DATA_DIR     # fit on validation data, store in config.json

The temperature is fitted on validation data (for the bundled model: FER-2013 PublicTest) by
minimising the negative log-likelihood; it divides the logits before the softmax
(``emotion_calibration.temperature`` in config.json, applied by emotion.backends.local), so it changes
confidences and never the predicted label.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def ece(probs: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: |accuracy - confidence| per confidence bin, weighted by its share."""
    confidence, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs((pred[inside] == truth[inside]).mean() - confidence[inside].mean())
    return float(total)


def view_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """(n, views, k) logits -> (n, k) probabilities averaged over the views (a face and its mirror image)."""
    return (logits.float() / temperature).softmax(-1).mean(1)


def fit_temperature(logits: torch.Tensor, truth: torch.Tensor) -> float:
    """The temperature in 0.5..3 (steps of 0.01) with the lowest NLL of the view-averaged probabilities."""
    grid = torch.arange(0.5, 3.0001, 0.01)
    nll = [F.nll_loss(view_probs(logits, float(t)).clamp_min(1e-12).log(), truth).item() for t in grid]
    return round(float(grid[int(np.argmin(nll))]), 2)


def folder_logits(folder: Path, items: list[tuple[Path, int]], batch_size: int = 256) -> torch.Tensor:
    """(n, views, 7) logits, in canonical label order, of a local model folder on labelled images."""
    from emotion.backends.local import LocalClassifier
    from emotion.image import load_image

    clf = LocalClassifier(str(folder), "cpu")
    views = 2 if clf.loaded.flip_average else 1
    order = list(clf.loaded.order)
    out = []
    for lo in range(0, len(items), batch_size):
        crops = [load_image(path) for path, _ in items[lo : lo + batch_size]]
        logits = clf.forward(clf.preprocess(crops)).float()
        logits = logits.view(views, len(crops), -1).transpose(0, 1)
        canonical = torch.full((len(crops), views, 7), -1e4)  # labels a model lacks get ~zero probability
        canonical[:, :, order] = logits
        out.append(canonical)
    return torch.cat(out)


def main(argv: list[str] | None = None) -> int:
    from emotion.evaluate import find_images

    parser = argparse.ArgumentParser(
        prog="python -m emotion.calibration", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", type=Path, help="a local model folder (its config.json is updated)")
    parser.add_argument("data", type=Path, help="validation images in one sub-folder per emotion")
    parser.add_argument("--name", default="", help="what the data is, stored beside the temperature")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = find_images(args.data)
    truth = torch.tensor([label for _, label in items])
    logits = folder_logits(args.model, items)
    temperature = fit_temperature(logits, truth)
    before = ece(view_probs(logits).numpy(), truth.numpy())
    after = ece(view_probs(logits, temperature).numpy(), truth.numpy())
    config_path = args.model / "config.json"
    config = json.loads(config_path.read_text())
    config["emotion_calibration"] = {"temperature": temperature, "fitted_on": args.name or args.data.name}
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    print(f"temperature {temperature:.2f} on {len(items)} images: ECE {before:.4f} -> {after:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
