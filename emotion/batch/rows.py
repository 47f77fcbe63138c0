"""The output table: one row per face, per image without a face, per unreadable file; one fixed schema.

Both engines build their rows here, from the same ``Analysis`` objects, so they cannot disagree on a
column's name, type or meaning.
"""

from __future__ import annotations

import pyarrow as pa

from emotion.labels import LABELS
from emotion.results import Analysis

MODEL_KEY = b"emotion.model"  # schema metadata: the model that classified the faces (checked on resume)

# Nullable everywhere but ``path``: an image without a face has no ``face``, box or scores; an unreadable
# file has only ``path`` and ``error``. An explicit schema keeps the types of all-null columns (a part
# holding only failures) the same as everywhere else.
SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("face", pa.int32()),  # 0, 1, ... left to right (the pipeline's order)
        *(pa.field(name, pa.int32()) for name in ("x1", "y1", "x2", "y2")),  # pixels of the upright image
        pa.field("detection_score", pa.float64()),
        pa.field("label", pa.string()),
        *(pa.field(label, pa.float64()) for label in LABELS),
        pa.field("uncertain", pa.bool_()),
        pa.field("error", pa.string()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(SCHEMA.names)


def schema_for(model: str) -> pa.Schema:
    return SCHEMA.with_metadata({MODEL_KEY: model.encode()})


def analysis_rows(path: str, analysis: Analysis) -> list[dict]:
    """One row per face; a single row with ``face`` null when the image has none."""
    if not analysis.faces:
        return [{"path": path}]
    rows = []
    for i, face in enumerate(analysis.faces):
        x1, y1, x2, y2 = face.box
        rows.append(
            {
                "path": path,
                "face": i,
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "detection_score": face.detection_score,
                "label": face.label,
                **{label: face.scores[label] for label in LABELS},
                "uncertain": face.uncertain,
            }
        )
    return rows


def error_row(path: str, message: str) -> dict:
    return {"path": path, "error": message}


def to_table(rows: list[dict], model: str) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema_for(model))


def image_count(table: pa.Table) -> int:
    """Distinct images in a table (an image's rows always travel together)."""
    return len(table.column("path").unique()) if table.num_rows else 0
