"""The whole analysis: load -> detect -> crop -> classify (one batch) -> typed result."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from emotion.classify import LocalClassifier, is_hub_id
from emotion.crop import crop_faces
from emotion.detect import Detection, detect_faces
from emotion.device import pick_device
from emotion.errors import InputError
from emotion.image import ImageInput, load_image
from emotion.labels import LABELS
from emotion.remote import RemoteClassifier
from emotion.results import Analysis, Face
from emotion.settings import BUNDLED, Settings

log = logging.getLogger(__name__)


def get_classifier(backend: str, model: str, settings: Settings, token: str | None = None):
    if backend == "local":
        return LocalClassifier(model or settings.model, settings.device, settings.dtype)
    if backend == "remote":
        model = model or settings.remote_model
        if model == BUNDLED:
            raise InputError("The bundled model runs only locally: pick a hub model for the remote backend.")
        if not is_hub_id(model):
            raise InputError(f"'{model}' is not a Hugging Face model id like 'owner/model-name'.")
        return RemoteClassifier(model, token, settings.remote_timeout, settings.remote_workers)
    raise InputError(f"Unknown backend '{backend}': use 'local' or 'remote'.")


def keep_largest(detections: list[Detection], max_faces: int) -> tuple[list[Detection], int]:
    """The ``max_faces`` largest detections, and how many were dropped."""
    if len(detections) <= max_faces:
        return detections, 0
    kept = sorted(detections, key=lambda d: d.area, reverse=True)[:max_faces]
    return kept, len(detections) - max_faces


def above(scores: dict[str, float], threshold: float) -> tuple[str, ...]:
    return tuple(k for k in sorted(scores, key=scores.get, reverse=True) if scores[k] >= threshold)


def make_faces(detections: list[Detection], probs, threshold: float) -> tuple[Face, ...]:
    """Typed faces from detections and their (n, 7) probabilities."""
    faces = []
    for det, row in zip(detections, probs):
        scores = {label: float(p) for label, p in zip(LABELS, row)}
        box = tuple(int(round(v)) for v in det.box)
        faces.append(Face(box, det.score, scores, above(scores, threshold), det.landmarks))
    return tuple(faces)


def analyze(
    image: ImageInput,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    settings: Settings | None = None,
) -> Analysis:
    """Find every face in ``image`` and classify each into the seven emotions.

    ``model`` is "bundled" (the default), a hub id or a local folder; ``backend``
    is "local" or "remote" (Hugging Face Inference API). Faces come left to right.
    """
    settings = settings or Settings()
    start = time.perf_counter()
    picture = load_image(image, settings.max_image_pixels)
    return analyze_image(
        picture,
        backend=backend,
        model=model,
        threshold=threshold,
        token=token,
        settings=settings,
        load_ms=(time.perf_counter() - start) * 1000,
    )


def _check_threshold(threshold: float | None, settings: Settings) -> float:
    threshold = settings.threshold if threshold is None else float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"The threshold must lie between 0 and 1, not {threshold}.")
    return threshold


def find_faces(picture, settings: Settings) -> tuple[list[Detection], int]:
    """Detections ordered left to right, capped at the largest ``max_faces``; and how many were dropped."""
    detections = detect_faces(
        picture,
        device=pick_device(settings.device),
        min_face_size=settings.min_face_size,
        min_score=settings.min_detection_score,
        max_side=settings.detect_max_side,
    )
    detections, dropped = keep_largest(detections, settings.max_faces)
    detections.sort(key=lambda d: (d.box[0], d.box[1]))
    return detections, dropped


def classify_crops(classifier, crops: list, settings: Settings):
    """One forward pass for all crops; local requests arriving together share it through the batcher."""
    if crops and isinstance(classifier, LocalClassifier) and settings.batch_window_ms > 0:
        return classifier.shared(settings.batch_window_ms / 1000)(crops)
    return classifier(crops)


def analyze_image(
    picture,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    settings: Settings | None = None,
    load_ms: float = 0.0,
) -> Analysis:
    """``analyze`` for an image already loaded upright and RGB by ``load_image`` (the UI draws on it)."""
    settings = settings or Settings()
    threshold = _check_threshold(threshold, settings)
    classifier = get_classifier(backend, model, settings, token)
    t_load = time.perf_counter()
    detections, dropped = find_faces(picture, settings)
    t_detect = time.perf_counter()
    probs = classify_crops(classifier, crop_faces(picture, [d.box for d in detections], settings.margin), settings)
    t_classify = time.perf_counter()
    timing = {
        "load": load_ms,
        "detect": (t_detect - t_load) * 1000,
        "classify": (t_classify - t_detect) * 1000,
        "total": load_ms + (t_classify - t_load) * 1000,
    }
    result = Analysis(
        make_faces(detections, probs, threshold), classifier.name, classifier.backend, picture.size, timing, dropped
    )
    log.info("%s: %d face(s) in %.0f ms", result.model, len(result.faces), timing["total"])
    return result


@dataclass(frozen=True)
class BatchResult:
    results: tuple[tuple[str, Analysis], ...]  # (name, analysis) of each readable image, in input order
    errors: tuple[tuple[str, str], ...]  # (name, message) of each image that could not be read
    pictures: tuple = ()  # the loaded images, for drawing (same order as results)


def analyze_batch(
    images: list,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    settings: Settings | None = None,
    progress=None,
) -> BatchResult:
    """Analyze several photos: each is detected on its own, then all their faces go through ONE
    batched classification. Unreadable images are reported, not fatal. ``progress(done, total)``
    is called after each photo's detection."""
    settings = settings or Settings()
    threshold = _check_threshold(threshold, settings)
    classifier = get_classifier(backend, model, settings, token)
    loaded, errors, seen = [], [], set()
    for i, image in enumerate(images):
        name = Path(image).name if isinstance(image, (str, Path)) else f"image {i + 1}"
        if name in seen:  # two uploads may share a name; neither result may hide the other
            name = f"{name} ({i + 1})"
        seen.add(name)
        start = time.perf_counter()
        try:
            picture = load_image(image, settings.max_image_pixels)
        except InputError as exc:
            errors.append((name, str(exc)))
            continue
        t_load = time.perf_counter()
        detections, dropped = find_faces(picture, settings)
        detect_ms = (time.perf_counter() - t_load) * 1000
        loaded.append((name, picture, detections, dropped, (t_load - start) * 1000, detect_ms))
        if progress:
            progress(i + 1, len(images))
    crops = [c for _, picture, dets, *_ in loaded for c in crop_faces(picture, [d.box for d in dets], settings.margin)]
    t0 = time.perf_counter()
    probs = classifier(crops) if crops else classifier([])
    classify_ms = (time.perf_counter() - t0) * 1000
    results, start = [], 0
    for name, picture, dets, dropped, load_ms, detect_ms in loaded:
        rows = probs[start : start + len(dets)]
        start += len(dets)
        # classify is the one shared forward pass for the whole batch, reported on every photo.
        timing = {
            "load": load_ms,
            "detect": detect_ms,
            "classify": classify_ms,
            "total": load_ms + detect_ms + classify_ms,
        }
        results.append(
            (
                name,
                Analysis(
                    make_faces(dets, rows, threshold),
                    classifier.name,
                    classifier.backend,
                    picture.size,
                    timing,
                    dropped,
                ),
            )
        )
    return BatchResult(tuple(results), tuple(errors), tuple(p for _, p, *_ in loaded))
