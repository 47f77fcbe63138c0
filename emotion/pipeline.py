"""The whole analysis, one data path: load -> detect -> crop -> classify (one batch) -> [explain] -> Analysis.

A ``Pipeline`` is built from settings; the detector and the backend are looked up by name in their
registries (emotion.detectors, emotion.backends). One call serves a photo (``analyze``), several
photos with one classification for all their faces (``analyze_many``) and a video or webcam frame
(``analyze`` with a frame). Callers render what comes back; they orchestrate nothing.
"""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import dataclass
from pathlib import Path

from emotion.backends import Backend, get_backend
from emotion.crop import square_box
from emotion.detectors import Detection, get_detector
from emotion.errors import InputError
from emotion.image import ImageInput, load_image
from emotion.labels import LABELS
from emotion.policy import check_model, check_token
from emotion.results import Analysis, Face
from emotion.settings import Settings
from emotion.workload import working

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchResult:
    results: tuple[tuple[str, Analysis], ...]  # (name, analysis) of each readable image, in input order
    errors: tuple[tuple[str, str], ...]  # (name, message) of each image that could not be read


def keep_largest(detections: list[Detection], max_faces: int) -> tuple[list[Detection], int]:
    """The ``max_faces`` largest detections, and how many were dropped."""
    if len(detections) <= max_faces:
        return detections, 0
    kept = sorted(detections, key=lambda d: d.area, reverse=True)[:max_faces]
    return kept, len(detections) - max_faces


def above(scores: dict[str, float], threshold: float) -> tuple[str, ...]:
    return tuple(k for k in sorted(scores, key=scores.get, reverse=True) if scores[k] >= threshold)


def is_uncertain(scores: dict[str, float], settings: Settings) -> bool:
    """A weak answer: a low top probability, or a close second."""
    first, second = sorted(scores.values(), reverse=True)[:2]
    return first < settings.uncertain_below or first - second < settings.uncertain_margin


def check_threshold(threshold, settings: Settings) -> float:
    if threshold is None:
        return settings.threshold
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= threshold <= 1.0:
        raise InputError(f"The threshold must be a number between 0 and 1, not {threshold!r}.")
    return float(threshold)


class Pipeline:
    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()

    def backend(self, backend: str = "local", model: str = "", token: str | None = None) -> Backend:
        """The classifier for a request; the model name and token pass emotion.policy's checks first."""
        return get_backend(backend, check_model(model, self.settings), self.settings, check_token(token))

    def detect(self, picture) -> tuple[list[Detection], int]:
        """Detections left to right, capped at the largest ``max_faces``; and how many were dropped."""
        detections = get_detector(self.settings.detector, self.settings)(picture)
        detections, dropped = keep_largest(detections, self.settings.max_faces)
        detections.sort(key=lambda d: (d.box[0], d.box[1]))
        return detections, dropped

    def analyze(
        self,
        image: ImageInput,
        *,
        backend: str = "local",
        model: str = "",
        threshold: float | None = None,
        token: str | None = None,
        explain: bool = False,
    ) -> Analysis:
        """Find every face in ``image`` and classify all of them in one batch. Faces come left to right."""
        batch = self.analyze_many(
            [image], backend=backend, model=model, threshold=threshold, token=token, explain=explain, strict=True
        )
        return batch.results[0][1]

    @working()  # counted as in progress: a detection elsewhere in this process then keeps to one core
    def analyze_many(
        self,
        images: list[ImageInput],
        *,
        backend: str = "local",
        model: str = "",
        threshold: float | None = None,
        token: str | None = None,
        explain: bool = False,
        progress=None,
        strict: bool = False,
    ) -> BatchResult:
        """Each photo is loaded and detected on its own, then ALL their faces go through one classification.

        Unreadable images are reported in ``errors`` (with ``strict``, raised). ``progress(done, total)``
        is called after each photo's detection.
        """
        settings = self.settings
        threshold = check_threshold(threshold, settings)
        if not isinstance(explain, bool):
            raise InputError(f"explain must be true or false, not {explain!r}.")
        classifier = self.backend(backend, model, token)
        if explain and classifier.backend != "local":
            raise InputError("Heatmaps need the local backend: the Inference API returns scores only.")
        found, errors, seen = [], [], set()
        for i, image in enumerate(images):
            name = Path(image).name if isinstance(image, (str, Path)) else f"image {i + 1}"
            if name in seen:  # two uploads may share a name; neither result may hide the other
                name = f"{name} ({i + 1})"
            seen.add(name)
            start = time.perf_counter()
            try:
                picture = load_image(image, settings.max_image_pixels)
            except InputError as exc:
                if strict:
                    raise
                errors.append((name, str(exc)))
                continue
            t_load = time.perf_counter()
            detections, dropped = self.detect(picture)
            t_detect = time.perf_counter()
            boxes = [square_box(d.box, picture.size, settings.margin) for d in detections]
            timing = {"load": (t_load - start) * 1000, "detect": (t_detect - t_load) * 1000}
            found.append((name, picture, detections, dropped, boxes, timing))
            if progress:
                progress(i + 1, len(images))
        crops = [picture.crop(box) for _, picture, _, _, boxes, _ in found for box in boxes]
        t0 = time.perf_counter()
        probs = classifier(crops)
        classify_ms = (time.perf_counter() - t0) * 1000
        heatmaps = [None] * len(crops)
        if explain:
            from emotion.explain import explain as occlusion

            t1 = time.perf_counter()
            heatmaps = occlusion(classifier, crops, settings.explain_grid, settings.explain_batch)
            explain_ms = (time.perf_counter() - t1) * 1000
        results, start = [], 0
        for name, picture, detections, dropped, boxes, timing in found:
            faces = []
            for det, box, row, heat in zip(detections, boxes, probs[start:], heatmaps[start:]):
                scores = {label: float(p) for label, p in zip(LABELS, row)}
                faces.append(
                    Face(
                        tuple(int(round(v)) for v in det.box),
                        det.score,
                        scores,
                        above(scores, threshold),
                        det.landmarks,
                        crop_box=box,
                        heatmap=heat,
                        uncertain=is_uncertain(scores, settings),
                    )
                )
            start += len(detections)
            # The classification is one forward pass for the whole batch, reported on every photo.
            timing = {**timing, "classify": classify_ms}
            if explain:
                timing["explain"] = explain_ms
            timing["total"] = sum(timing.values())
            analysis = Analysis(
                tuple(faces), classifier.name, classifier.backend, picture.size, timing, dropped, image=picture
            )
            log.info("%s: %s: %d face(s) in %.0f ms", analysis.model, name, len(faces), timing["total"])
            results.append((name, analysis))
        return BatchResult(tuple(results), tuple(errors))


def analyze(
    image: ImageInput,
    *,
    backend: str = "local",
    model: str = "",
    threshold: float | None = None,
    token: str | None = None,
    explain: bool = False,
    settings: Settings | None = None,
) -> Analysis:
    """Find every face in ``image`` and classify each into the seven emotions.

    ``model`` is "bundled" (the default), a hub id or a local folder; ``backend`` is "local" or
    "remote" (Hugging Face Inference API); ``explain`` adds a heatmap per face. Faces come left to right.
    """
    return Pipeline(settings).analyze(
        image, backend=backend, model=model, threshold=threshold, token=token, explain=explain
    )
