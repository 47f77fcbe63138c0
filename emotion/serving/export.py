"""Exports of one or more analysed photos: JSON (the API's document per photo) and CSV (a row per face)."""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
import uuid
from pathlib import Path

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


def write_exports(named: list[tuple[str, Analysis]], folder: Path, max_age_s: float = 3600) -> list[Path]:
    """Write results.json and results.csv into a fresh sub-folder; sub-folders older than ``max_age_s`` go.

    Requests clean up concurrently: a folder another request removed first is simply gone, never an error.
    """
    folder.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.iterdir():
        try:
            expired = old.is_dir() and now - old.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if expired:
            shutil.rmtree(old, ignore_errors=True)
    target = folder / uuid.uuid4().hex
    target.mkdir()
    paths = [target / "results.json", target / "results.csv"]
    paths[0].write_text(to_json(named))
    paths[1].write_text(to_csv(named))
    return paths
