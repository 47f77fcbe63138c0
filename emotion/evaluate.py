"""Evaluate a model on a folder with one sub-folder per emotion.

    python -m emotion.evaluate DIR [--model M] [--json OUT] [--png CONFUSION] [--detect] [--exclude LIST]

By default every image is classified as a face crop, as it is; ``--detect`` runs
the whole pipeline (detect, crop, classify) and scores the largest face, an image
with no face counting as an error. Prints accuracy, macro-F1 and per-class recall;
writes the confusion matrix as a PNG and everything as JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from emotion.calibration import ece
from emotion.errors import EmotionError
from emotion.labels import LABELS, canonical

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


def find_images(root: Path, exclude: set[str] = frozenset()) -> list[tuple[Path, int]]:
    """(image, label index) for every image in the label-named sub-folders of ``root``."""
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = canonical(folder.name)
        if label is None:
            log.warning("skipping folder %s: not one of %s", folder.name, ", ".join(LABELS))
            continue
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.relative_to(root).as_posix() not in exclude:
                items.append((path, LABELS.index(label)))
    if not items:
        raise EmotionError(f"No images found in label sub-folders ({', '.join(LABELS)}) of {root}.")
    return items


def metrics(truth: np.ndarray, probs: np.ndarray) -> dict:
    """Accuracy, macro-F1 over the labels present in ``truth``, per-class scores, confusion matrix, ECE.

    ``probs`` (n, 7) is all zero where no face was found: it counts as wrong, appears in no column
    and is left out of the calibration error.
    """
    found = probs.sum(1) > 0
    pred = np.where(found, probs.argmax(1), -1)
    k = len(LABELS)
    confusion = np.zeros((k, k), dtype=int)
    for t, p in zip(truth, pred):
        if p >= 0:
            confusion[t, p] += 1
    support = np.bincount(truth, minlength=k)
    predicted = confusion.sum(0)
    per_class, f1s = {}, []
    for i, name in enumerate(LABELS):
        if support[i] == 0:
            continue
        tp = confusion[i, i]
        recall = tp / support[i]
        precision = tp / predicted[i] if predicted[i] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        f1s.append(f1)
        per_class[name] = {
            "recall": float(recall),
            "precision": float(precision),
            "f1": float(f1),
            "support": int(support[i]),
        }
    return {
        "n": int(len(truth)),
        "accuracy": float(np.mean(truth == pred)),
        "macro_f1": float(np.mean(f1s)),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "labels": list(LABELS),
        "no_face": int(np.sum(pred < 0)),
        "ece": ece(probs[found], truth[found]) if found.any() else float("nan"),
    }


def predict(items, model: str, detect: bool, batch_size: int = 256, device: str = "auto") -> np.ndarray:
    """(n, 7) probabilities; a row of zeros where no face was found."""
    from emotion.image import load_image
    from emotion.pipeline import Pipeline
    from emotion.settings import Settings

    pipeline = Pipeline(Settings(device=device))
    probs = np.zeros((len(items), len(LABELS)))
    start = time.perf_counter()
    if detect:
        for i, (path, _) in enumerate(items):
            faces = pipeline.analyze(path, model=model).faces
            if faces:
                largest = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
                probs[i] = [largest.scores[label] for label in LABELS]
            _progress(i + 1, len(items), start, 1)
        return probs
    classifier = pipeline.backend("local", model)
    for lo in range(0, len(items), batch_size):
        chunk = items[lo : lo + batch_size]
        probs[lo : lo + len(chunk)] = classifier([load_image(path) for path, _ in chunk])
        _progress(lo + len(chunk), len(items), start, batch_size)
    return probs


def _progress(done: int, total: int, start: float, step: int) -> None:
    """Log about every 1,000 images (``step`` images are done per call) and at the end."""
    if done == total or done % 1000 < step:
        log.info("%d/%d images (%.0f/s)", done, total, done / max(1e-9, time.perf_counter() - start))


def plot_confusion(result: dict, path: Path, title: str) -> None:
    from matplotlib.figure import Figure

    confusion = np.array(result["confusion"], dtype=float)
    rows = confusion.sum(1, keepdims=True)
    share = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    fig = Figure(figsize=(6.4, 5.6), layout="constrained")
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(LABELS)), LABELS, rotation=45, ha="right")
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            if confusion[i, j]:
                ax.text(
                    j,
                    i,
                    f"{share[i, j]:.0%}\n{int(confusion[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black",
                )
    fig.colorbar(im, ax=ax, label="share of the true class")
    fig.savefig(path, dpi=120)


def report(result: dict) -> str:
    lines = [
        f"n={result['n']}  accuracy={result['accuracy']:.4f}  macro-F1={result['macro_f1']:.4f}"
        f"  ECE={result['ece']:.4f} (15 bins)"
    ]
    if result["no_face"]:
        lines.append(f"no face found in {result['no_face']} image(s) (counted as wrong)")
    lines.append("recall per class:")
    for name, s in result["per_class"].items():
        lines.append(f"  {name:<9} {s['recall']:.3f}  (n={s['support']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emotion.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dir", type=Path, help="folder with one sub-folder per emotion label")
    parser.add_argument("--model", default="", help="'bundled' (default), a hub id or a model folder")
    parser.add_argument("--json", type=Path, help="write all metrics here")
    parser.add_argument(
        "--png", type=Path, help="confusion-matrix picture (default: next to --json, else confusion.png)"
    )
    parser.add_argument("--detect", action="store_true", help="run face detection first (whole photos)")
    parser.add_argument("--exclude", type=Path, help="text file of image paths (relative to DIR) to leave out")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        exclude = set(args.exclude.read_text().split()) if args.exclude else set()
        items = find_images(args.dir, exclude)
        log.info("%d images in %s", len(items), args.dir)
        probs = predict(items, args.model, args.detect, args.batch_size, args.device)
    except EmotionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    truth = np.array([label for _, label in items])
    result = metrics(truth, probs)
    result.update(model=args.model or "bundled", data=str(args.dir), detect=args.detect, excluded=len(exclude))
    print(report(result))
    png = args.png or (args.json.with_suffix(".png") if args.json else Path("confusion.png"))
    plot_confusion(result, png, f"{result['model']} on {args.dir.name}: accuracy {result['accuracy']:.1%}")
    print(f"confusion matrix: {png}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
        print(f"metrics: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
