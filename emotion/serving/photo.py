"""A photo's analysis for people: the annotated picture, the table, the status line, downloads, heatmaps and
the JSON document. ``photo_outputs`` is the whole /analyze request after its inputs are checked; app.py runs
it on the server's threads or in a worker process (emotion.serving.workers), so all it takes and gives back
is plain data: paths, rows, text."""

from __future__ import annotations

import json
import time
from pathlib import Path

from emotion.pipeline import Pipeline
from emotion.serving.export import download_stem, request_folder, save_image, write_exports
from emotion.serving.render import DISPLAY_SIDE, draw_faces, heatmap_gallery, status_text, table_rows


def photo_outputs(
    pipeline: Pipeline, image: str, options: dict, explain: bool, exports: bool, export_dir: Path, start: float
) -> tuple:
    """(shown picture, table rows, status, download paths or None, [(heatmap path, caption)], JSON document)."""
    settings = pipeline.settings
    remote_explain = explain and options["backend"] != "local"
    result = pipeline.analyze(image, explain=explain and not remote_explain, **options)
    stem = download_stem(Path(image).name)
    folder = request_folder(export_dir, settings.cache_minutes * 60)
    shown = save_image(draw_faces(result.image, result, max_side=DISPLAY_SIDE), folder, f"{stem}_faces")
    downloads = []
    if exports:
        downloads = write_exports([(Path(image).name, result)], folder, stem)
        if max(result.image.size) > DISPLAY_SIDE:  # the shown picture was made smaller: offer the full size
            downloads.append(save_image(draw_faces(result.image, result), folder, f"{stem}_faces_full"))
    heatmaps = [(str(save_image(im, folder, f"heat{i}")), c) for i, (im, c) in enumerate(heatmap_gallery(result))]
    status = status_text(result, time.perf_counter() - start)
    if remote_explain:
        status += "\n\nHeatmaps need the local backend (the Inference API returns scores only)."
    if result.backend != "local":
        status += f"\n\nClassified by the Inference API with `{result.model}`."
    files = [str(p) for p in downloads] or None
    return str(shown), table_rows(result), status, files, heatmaps, result.to_dict()


def photo_text(pipeline: Pipeline, image: str, options: dict) -> str:
    """The /emotions answer (the MCP tool emotions_in_photo): the analysis's JSON document as text."""
    return json.dumps(pipeline.analyze(image, **options).to_dict())
