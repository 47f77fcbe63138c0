"""Exports of one or more analysed photos: JSON (the API's document per photo) and CSV (a row per face)."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

from PIL import Image

from emotion.labels import LABELS
from emotion.results import Analysis

CSV_COLUMNS = [
    "image",
    "face",
    "x1",
    "y1",
    "x2",
    "y2",
    "detection_score",
    "label",
    "above_threshold",
    "uncertain",
    *LABELS,
    "model",
    "backend",
]


def to_json(named: list[tuple[str, Analysis]]) -> str:
    return json.dumps({name: result.to_dict() for name, result in named}, indent=2)


def to_csv(named: list[tuple[str, Analysis]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for name, result in named:
        for i, face in enumerate(result.faces, start=1):
            writer.writerow(
                [
                    name,
                    i,
                    *face.box,
                    f"{face.detection_score:.4f}",
                    face.label,
                    "+".join(face.above_threshold),
                    str(face.uncertain).lower(),
                    *(f"{face.scores[k]:.6f}" for k in LABELS),
                    result.model,
                    result.backend,
                ]
            )
    return out.getvalue()


SWEEP_EVERY_S = 60.0  # request folders are looked over for expired ones at most this often, per root
_last_sweep: dict[Path, float] = {}
_sweep_lock = threading.Lock()


def request_folder(root: Path, max_age_s: float = 3600) -> Path:
    """A fresh sub-folder of ``root`` for one request's files; sub-folders older than ``max_age_s`` go.

    Each request writes its own files: Gradio caches an image it encodes itself under a name derived from
    its bytes and rewrites it in place, so two requests with the same answer could serve a half-written
    file. A file path is copied into Gradio's cache atomically instead.

    The sweep for expired folders runs at most every SWEEP_EVERY_S (or a quarter of ``max_age_s``, if less)
    per root, not on every request: it reads every folder of the last ``max_age_s``, thousands on a busy
    server, and that work grew with the traffic. See ``sweep``.
    """
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    with _sweep_lock:
        due = now - _last_sweep.get(root, float("-inf")) >= min(SWEEP_EVERY_S, max_age_s / 4)
        if due:
            _last_sweep[root] = now
    if due:
        sweep(root, max_age_s, now)
    target = root / uuid.uuid4().hex
    target.mkdir()
    return target


def sweep(root: Path, max_age_s: float, now: float | None = None) -> None:
    """Removes the sub-folders of ``root`` older than ``max_age_s``. Safe while others sweep the same root
    (other app processes, say): a folder removed by someone else first is simply gone, never an error."""
    now = time.time() if now is None else now
    for old in root.iterdir():
        try:
            expired = old.is_dir() and now - old.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if expired:
            shutil.rmtree(old, ignore_errors=True)


def download_stem(name: str) -> str:
    """A file name stem for downloads made from ``name`` (an uploaded file's name): letters, digits, - and _."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(name).stem).strip("_")[:60]
    return stem or "photo"


def save_image(image: Image.Image, folder: Path, stem: str, quality: int = 90) -> Path:
    """``image`` as a JPEG in ``folder`` (a tenth of the PNG's size for a photo)."""
    path = folder / f"{stem}.jpg"
    image.convert("RGB").save(path, "JPEG", quality=quality)
    return path


def write_exports(named: list[tuple[str, Analysis]], folder: Path, stem: str = "results") -> list[Path]:
    """``stem``.json and ``stem``.csv in ``folder`` (see request_folder)."""
    paths = [folder / f"{stem}.json", folder / f"{stem}.csv"]
    paths[0].write_text(to_json(named))
    paths[1].write_text(to_csv(named))
    return paths
