"""FER-2013 for training: pack the JPEGs once into one .npz, load them as arrays.

The pack keeps the JPEG bytes as they are (about 51 MB for Training plus
PublicTest), so it is small enough to travel to a GPU machine in one file.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.labels import LABELS

log = logging.getLogger(__name__)

# FER+ vote columns in labels.csv, in the canonical order; contempt, unknown and
# "not a face" votes are left out of the soft target.
FERPLUS_COLUMNS = (
    "ferplus_anger",
    "ferplus_disgust",
    "ferplus_fear",
    "ferplus_happiness",
    "ferplus_sadness",
    "ferplus_surprise",
    "ferplus_neutral",
)
SPLITS = ("train", "publictest")


@dataclass(frozen=True)
class Split:
    images: np.ndarray  # (n, 48, 48) uint8 greyscale
    labels: np.ndarray  # (n,) int64, index into LABELS (the original FER-2013 label)
    ferplus: np.ndarray  # (n, 7) float32 vote shares; all zero where FER+ has no usable votes
    duplicate: np.ndarray  # (n,) bool, PublicTest image that copies a training image


def pack(data_dir: Path, out: Path) -> Path:
    """Write every image of labels.csv (JPEG bytes plus an offset table) into one .npz."""
    rows = list(csv.DictReader(open(data_dir / "labels.csv", newline="")))
    blobs, offsets = [], [0]
    for row in rows:
        blob = (data_dir / row["path"]).read_bytes()
        blobs.append(np.frombuffer(blob, np.uint8))
        offsets.append(offsets[-1] + len(blob))
    votes = np.array([[float(row[c]) for c in FERPLUS_COLUMNS] for row in rows], np.float32)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        out,
        jpeg=np.concatenate(blobs),
        offsets=np.array(offsets, np.int64),
        split=np.array([SPLITS.index(r["split"]) for r in rows], np.int8),
        label=np.array([LABELS.index(r["fer2013_label"]) for r in rows], np.int64),
        votes=votes,
        duplicate=np.array([r["duplicate_of_train"] == "1" for r in rows]),
    )
    log.info("packed %d images into %s (%.1f MB)", len(rows), out, out.stat().st_size / 1e6)
    return out


def load(packed: Path, split: str, limit: int = 0) -> Split:
    """Decode one split of a pack; ``limit`` keeps a fixed random n images (for smoke runs)."""
    z = np.load(packed)
    idx = np.flatnonzero(z["split"] == SPLITS.index(split))
    if limit:
        # labels.csv is sorted by class, so a plain head would hold one class only.
        idx = np.sort(np.random.default_rng(0).permutation(idx)[:limit])
    jpeg, offsets = z["jpeg"], z["offsets"]
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(jpeg[offsets[i] : offsets[i + 1]].tobytes())).convert("L")) for i in idx]
    )
    votes = z["votes"][idx].clip(min=0)
    total = votes.sum(1, keepdims=True)
    ferplus = np.where(total > 0, votes / np.maximum(total, 1), 0).astype(np.float32)
    return Split(images, z["label"][idx], ferplus, z["duplicate"][idx].astype(bool))
