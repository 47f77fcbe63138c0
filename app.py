"""Gradio app: wires the `emotion` package into a web UI, the API and an MCP server. Nothing heavy at import.

Each tab owns its inputs and its results. The API endpoints (/analyze, /analyze_batch) are the same handlers
the page uses, but the page's own events keep errors in the tab's status line instead of raising them.
"""

from __future__ import annotations

import contextvars
import functools
import json
import logging
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import gradio as gr
import numpy as np
from PIL import Image
from starlette.middleware import Middleware

from emotion.crop import square_box
from emotion.detectors import get_detector
from emotion.errors import EmotionError
from emotion.image import image_size, load_image
from emotion.pipeline import Pipeline
from emotion.serving import allocator
from emotion.serving.export import download_stem, request_folder, save_image, write_exports
from emotion.serving.photo import photo_outputs, photo_text
from emotion.serving.queue import queue
from emotion.serving.render import (
    DISPLAY_SIDE,
    TABLE_HEADERS,
    batch_table_rows,
    draw_faces,
    emotion_counts,
    heat_legend_html,
)
from emotion.serving.track import FaceTracker, LiveSession
from emotion.serving.uploads import BodyLimit, checked_upload, data_url_to_file
from emotion.serving.video import SUMMARY_HEADERS, video_outputs
from emotion.serving.workers import Workers
from emotion.settings import BUNDLED, HUB_MODELS, Settings
from emotion.video import analyze_video as analyze_video_core
from emotion.workload import working

log = logging.getLogger(__name__)

INTRO = """# Facial emotion recognition
Upload a photo or take a webcam snapshot: every face is found and classified into **angry, disgust, fear,
happy, sad, surprise or neutral** by a Vision Transformer. The bundled model runs offline on this server."""

NOTICE = (
    "A facial expression is not a feeling: these are guesses about how a face looks, not what a person feels. "
    "Accuracy differs between people and conditions. Do not use them for decisions about people."
)

CSS = """
.notice { font-size: 14px; }
.status { min-height: 2.2em; font-size: 15px; }
.status p { margin: 0; }
.face-card { min-width: 150px !important; }
.heat-legend { display: flex; align-items: center; gap: 8px; font-size: 14px; }
#live-info, #live-info * { opacity: 1 !important; }  /* a streaming output is dimmed while "pending" */
.heat-bar { display: inline-block; width: 180px; height: 12px; border-radius: 6px; }
"""


class PhotoInput(gr.Image):
    """gr.Image that accepts only what a visitor really sent (emotion.serving.uploads): an uploaded file or a
    checked data: URL, measured from its header before anything decodes it. A refused upload becomes an
    EmotionError *value*, so the page can show it in the tab's status and the API can raise it."""

    is_template = True  # the browser side stays the stock Image component
    limits = Settings()  # build_demo gives each instance the app's own settings

    def preprocess(self, payload):
        if payload is None:
            return None
        limits = self.limits
        max_bytes = limits.max_upload_mb * 2**20
        try:
            if payload.url and payload.url.startswith("data:"):
                path = data_url_to_file(payload.url, max_bytes, limits.max_image_pixels)
            else:
                path = checked_upload(payload.path, max_bytes, limits.max_image_pixels)
            if self.type == "filepath":
                return path
            return np.asarray(load_image(path, limits.max_image_pixels))
        except EmotionError as exc:
            return exc


class PhotoFiles(gr.File):
    """gr.File for several photos: at most ``max_batch_photos``, each an upload this app received."""

    is_template = True
    limits = Settings()

    def preprocess(self, payload):
        if payload is None:
            return None
        files = list(payload.root) if hasattr(payload, "root") else [payload]
        limits = self.limits
        if len(files) > limits.max_batch_photos:
            return EmotionError(f"{len(files)} photos is too many at once: the limit is {limits.max_batch_photos}.")
        try:
            return [checked_upload(f.path, limits.max_upload_mb * 2**20) for f in files]
        except EmotionError as exc:
            return exc


class VideoInput(gr.Video):
    """gr.Video that accepts only an upload this app received, within the video size limit; the file goes to
    emotion.video as it is (no conversion). A refusal becomes an EmotionError value, as for photos."""

    is_template = True
    limits = Settings()

    def preprocess(self, payload):
        if payload is None:
            return None
        try:
            return checked_upload(payload.path, self.limits.video_max_mb * 2**20)
        except EmotionError as exc:
            return exc


class Threshold(gr.Slider):
    """The threshold slider; its API value goes to the pipeline unchanged, whose check gives the message
    (the stock slider fails with a generic error on a string)."""

    is_template = True

    def preprocess(self, payload):
        return payload


class ModelBox(gr.Dropdown):
    """The model dropdown; the value goes to emotion.policy unchanged, which gives the one refusal message."""

    is_template = True

    def preprocess(self, payload):
        return payload


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    choices = [("bundled: our hybrid ViT trained on FER-2013 (offline)", BUNDLED)]
    listed = settings.allowed_models if settings.public else HUB_MODELS
    choices += [(m, m) for m in listed]
    if settings.model not in (BUNDLED, *listed):
        choices.insert(0, (settings.model, settings.model))
    return choices


def _options(backend, model, threshold, token) -> dict:
    """The request's options with API defaults filled in; types are checked by the pipeline."""
    return {"backend": "local" if backend is None else backend, "model": model, "threshold": threshold, "token": token}


def _check_explain(explain) -> bool:
    if explain is None:
        return False
    if not isinstance(explain, bool):
        raise EmotionError(f"explain must be true or false, not {explain!r}.")
    return explain


def _received(value):
    """An input's value, or its refusal (PhotoInput/PhotoFiles hand refusals over as EmotionError values)."""
    if isinstance(value, EmotionError):
        raise value
    return value


def _batch_pixels(paths: list[str], settings: Settings) -> None:
    """Refuse a batch whose photos hold too many pixels together, from their headers (nothing decoded)."""
    total = 0
    for path in paths:
        try:
            w, h = image_size(path, settings.max_image_pixels)
        except EmotionError:
            continue  # reported per photo by the pipeline
        total += w * h
    if total > settings.max_batch_pixels:
        raise EmotionError(
            f"These photos hold {total / 1e6:.0f} MP together; the limit is {settings.max_batch_pixels / 1e6:.0f} MP "
            "per batch. Send fewer or smaller photos."
        )


def api_errors(handler):
    """For API endpoints: an EmotionError becomes gr.Error, which the client raises with its message."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None

    return run


def for_api(handler):
    """The handler as an API endpoint answers: without the page's download files. gradio_client fetches
    every file of an answer, one HTTP request each; the CSV and JSON files repeat the answer's own JSON
    document (measured: a 3-face photo's round trip 463 -> 359 ms with the two files left out)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        return handler(*args, **kwargs, exports=False)

    return run


def page_errors(handler, n_outputs: int, status_index: int):
    """For the page: an EmotionError empties the tab's results and stays in its status line (and a toast)."""

    @functools.wraps(handler)
    def run(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except EmotionError as exc:
            gr.Warning(str(exc))
            outputs = [None] * n_outputs
            outputs[status_index] = f"**Could not analyse this:** {exc}"
            return tuple(outputs)

    return run


def _share_cores(settings: Settings) -> None:
    """Each worker thread gets its share of the cores for torch: ``concurrency`` requests run at once, and two
    requests each asking torch for every core ran several times slower than one thread each (measured:
    3 faces classified in 384 ms with 2 threads under contention, 47 ms with 1)."""
    import torch

    torch.get_num_threads()  # torch's first use sets up its pool, which would undo a setting made before it
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.concurrency))


def make_handlers(settings: Settings, export_dir: Path):
    pipeline = Pipeline(settings)
    # The model work of every request runs on these few long-lived threads. Gradio hands each request to
    # whichever of its (up to 40, short-lived) pool threads is free; torch and the allocator keep memory
    # per thread, so that churn grew the server by megabytes per request. Gradio's queue already admits
    # only ``concurrency`` requests at once, so this pool never makes one wait.
    workers = ThreadPoolExecutor(
        settings.concurrency + 1, thread_name_prefix="emotion-work", initializer=_share_cores, initargs=(settings,)
    )
    # Photo analyses (the API's busiest endpoints) go to worker processes when settings.workers says so.
    photo_workers = Workers(settings, settings.workers) if settings.workers else None
    if photo_workers:
        photo_workers.start()

    def analyses(fn, *args):
        """fn(pipeline, *args): in a worker process, or on this thread with the server's own pipeline."""
        return photo_workers.run(fn, *args) if photo_workers else fn(pipeline, *args)

    def on_workers(handler):
        # In progress from start to end (drawing and encoding too): a detection in another request meanwhile
        # keeps to one core instead of spreading onto the one this request works on (emotion.workload).
        counted = working()(handler)

        @functools.wraps(handler)  # Gradio reads the signature (defaults, gr.Progress) through __wrapped__
        def run(*args, **kwargs):
            context = contextvars.copy_context()  # Gradio's request context: progress bars, errors
            return workers.submit(context.run, counted, *args, **kwargs).result()

        return run

    @on_workers
    def analyze_photo(
        image: str,
        backend: str = "local",
        model: str = "",
        threshold: float = settings.threshold,
        token: str | None = None,
        explain: bool = False,
        *,
        exports: bool = True,
    ):
        """Find every face in a photo and classify each into one of seven emotions: angry, disgust, fear,
        happy, sad, surprise, neutral.

        Args:
            image: the photo (JPEG, PNG, WebP...), as an uploaded file or a URL.
            backend: "local" (this server's model, the default) or "remote" (the Hugging Face Inference API).
            model: "" for the default (the bundled model), or one of the model list's hub ids.
            threshold: also list every emotion whose probability is at or above this number (0 to 1).
            token: a Hugging Face token, only for the remote backend.
            explain: true to add a heatmap per face showing which regions drove the prediction.

        Returns:
            The annotated photo, a table, a status line, the page's downloads (none in an API answer: the JSON
            document below holds the same), the heatmaps, and last a JSON document: {"faces": [{"box":
            [x1, y1, x2, y2], "label": the top emotion, "scores": {each of the seven emotions: probability,
            summing to 1}, "above_threshold": [...], "uncertain": true when the answer is weak}], "image_size":
            [width, height], "model", "backend", "timing_ms", "message"}. Faces are ordered left to right.
        """
        start = time.perf_counter()
        image = _received(image)
        if image is None:
            raise EmotionError("Upload a photo or take a webcam snapshot first.")
        request = (image, _options(backend, model, threshold, token), _check_explain(explain), exports, export_dir)
        return analyses(photo_outputs, *request, start)

    @on_workers
    def analyze_photos(
        files,
        backend="local",
        model="",
        threshold=settings.threshold,
        token=None,
        progress=gr.Progress(),
        *,
        exports: bool = True,
    ):
        """Analyze several photos at once; all their faces are classified together in one batch.

        Args:
            files: the photos, as uploaded files (at most 12).
            backend: "local" or "remote" (the Hugging Face Inference API).
            model: "" for the default model, or a hub id from the model list.
            threshold: also list every emotion at or above this probability (0 to 1).
            token: a Hugging Face token, only for the remote backend.

        Returns:
            Annotated photos, a table, a status line, the page's downloads (none in an API answer), and last
            {"photos": {name: the /analyze JSON document}, "errors": {name: message}} over the seven emotions.
        """
        start = time.perf_counter()
        files = _received(files)
        if not files:
            raise EmotionError("Choose one or more photos first.")
        paths = [getattr(f, "name", f) for f in files]
        _batch_pixels(paths, settings)
        progress(0, desc="Finding faces")
        batch = pipeline.analyze_many(
            paths,
            **_options(backend, model, threshold, token),
            progress=lambda done, total: progress(done / total, desc=f"Photo {done}/{total}"),
        )
        named = list(batch.results)
        folder = request_folder(export_dir, settings.cache_minutes * 60)
        gallery = [
            (
                str(save_image(draw_faces(r.image, r, max_side=DISPLAY_SIDE), folder, f"faces{i}")),
                f"{name}: {emotion_counts(r.faces) or 'no face'}",
            )
            for i, (name, r) in enumerate(named)
        ]
        faces = sum(len(r.faces) for _, r in named)
        lines = [
            f"**{faces} face(s) in {len(named)} photo(s)**, classified in one batch · "
            f"{time.perf_counter() - start:.2f} s"
        ]
        lines += [f"- {name}: no face found" for name, r in named if not r.faces]
        lines += [f"- {name}: {error}" for name, error in batch.errors]
        stem = f"{download_stem(named[0][0])}_and_{len(named) - 1}_more" if len(named) > 1 else None
        stem = stem or (download_stem(named[0][0]) if named else "photos")
        downloads = [str(p) for p in write_exports(named, folder, stem)] if named and exports else None
        document = {"photos": {name: r.to_dict() for name, r in named}, "errors": dict(batch.errors)}
        return gallery, batch_table_rows(named), "\n".join(lines), downloads, document

    @on_workers
    def emotions_in_photo(
        image: str,
        backend: str = "local",
        model: str = "",
        threshold: float = settings.threshold,
        token: str | None = None,
    ) -> str:
        """Find every face in a photo and name its facial expression: one of seven emotions, angry, disgust,
        fear, happy, sad, surprise or neutral. (An expression is not a feeling: do not decide about people.)

        Args:
            image: the photo (JPEG, PNG, WebP...), as a file upload, an http(s) URL or a data: URL.
            backend: "local" (this server's model, the default) or "remote" (the Hugging Face Inference API).
            model: "" for the default (the bundled model), or one of the model list's hub ids.
            threshold: also list every emotion whose probability is at or above this number (0 to 1).
            token: a Hugging Face token, only for the remote backend.

        Returns:
            JSON text: {"faces": [{"box": [x1, y1, x2, y2] in pixels, "label": the most likely emotion, "scores":
            {each of the seven emotions: its probability; they sum to 1}, "above_threshold": [emotions at or above
            the threshold, most likely first], "uncertain": true when the answer is weak}], "image_size": [width,
            height], "model", "backend", "message"}. Faces are ordered left to right; no face gives "faces": [].
        """
        image = _received(image)
        if image is None:
            raise EmotionError("Send a photo.")
        return analyses(photo_text, image, _options(backend, model, threshold, token))

    @on_workers
    def analyze_video(
        video: str,
        backend: str = "local",
        model: str = "",
        threshold: float = settings.threshold,
        sample_fps: float = settings.video_sample_fps,
        token: str | None = None,
        progress=gr.Progress(),
    ):
        """Follow every face through a video and classify its expression, frame by frame, into seven emotions:
        angry, disgust, fear, happy, sad, surprise, neutral.

        Args:
            video: the video file (MP4/H.264, WebM, MOV, AVI...), uploaded.
            backend: "local" (this server's model, the default) or "remote" (the Hugging Face Inference API).
            model: "" for the default (the bundled model), or one of the model list's hub ids.
            threshold: emotions at or above this probability are plotted on the timeline (0 to 1).
            sample_fps: frames analysed per second of video (default 5).
            token: a Hugging Face token, only for the remote backend.

        Returns:
            The annotated video, the timeline, a summary per face, a status line, CSV and JSON downloads, and last
            the JSON document: {"tracks": [{"id", "frames": [{"t": seconds, "box": [x1, y1, x2, y2], "label",
            "scores": {the seven emotions}}], "summary": {"label", "share": {the seven emotions}}}], "fps",
            "duration_s", "frames_analyzed", "model", "backend", "timing_ms"}.
        """
        video = _received(video)
        if video is None:
            raise EmotionError("Upload a video first.")
        folder = request_folder(export_dir, settings.cache_minutes * 60)
        progress(0, desc="Reading the video")
        start = time.perf_counter()
        outputs = list(
            video_outputs(
                pipeline,
                video,
                **_options(backend, model, threshold, token),
                sample_fps=sample_fps,
                folder=folder,
                progress=lambda done, total: progress((done, total), desc="Analysing frames", unit="frames"),
            )
        )
        outputs[3] = f"{outputs[3]} · {time.perf_counter() - start:.1f} s"
        return tuple(outputs)

    @on_workers
    def emotions_in_video(
        video: str,
        backend: str = "local",
        model: str = "",
        threshold: float = settings.threshold,
        sample_fps: float = settings.video_sample_fps,
        token: str | None = None,
    ) -> str:
        """Follow every face through a video and name its facial expression over time: one of seven emotions,
        angry, disgust, fear, happy, sad, surprise or neutral. (An expression is not a feeling.)

        Args:
            video: the video (MP4/H.264, WebM, MOV, AVI...), as a file upload, an http(s) URL or a data: URL.
            backend: "local" (this server's model, the default) or "remote" (the Hugging Face Inference API).
            model: "" for the default (the bundled model), or one of the model list's hub ids.
            threshold: a probability from 0 to 1 (kept for symmetry with the photo tool).
            sample_fps: frames analysed per second of video (default 5).
            token: a Hugging Face token, only for the remote backend.

        Returns:
            JSON text: {"tracks": [{"id": int, "frames": [{"t": seconds, "box": [x1, y1, x2, y2], "label": the
            most likely emotion, "scores": {each of the seven emotions: probability}}], "summary": {"label": the
            dominant emotion, "share": {each emotion: share of the track's frames}}}], "fps", "duration_s",
            "frames_analyzed", "model", "backend", "timing_ms"}. Tracks come in order of first appearance.
        """
        video = _received(video)
        if video is None:
            raise EmotionError("Send a video.")
        result = analyze_video_core(
            video, **_options(backend, model, threshold, token), sample_fps=sample_fps, pipeline=pipeline
        )
        return json.dumps(result.to_dict())

    live = Pipeline(replace(settings, detect_max_side=640))  # webcam frames: speed first

    @on_workers
    def live_frame(frame, model, threshold, session):
        """One webcam frame: labelled boxes with per-face smoothed scores, and the frame rate."""
        if frame is None:
            return gr.skip(), gr.skip(), session
        if isinstance(frame, EmotionError):
            return gr.skip(), f"**Could not analyse this frame:** {frame}", session
        session = session or LiveSession(FaceTracker(threshold=threshold))
        if session.stale(time.perf_counter()):
            return gr.skip(), gr.skip(), session
        session.tracker.threshold = threshold
        try:
            result = live.analyze(frame, model=model, threshold=threshold)
        except EmotionError as exc:
            return gr.skip(), f"**Could not analyse this frame:** {exc}", session
        smoothed = session.tracker.update(result)
        fps = session.tick(time.perf_counter())
        n = len(smoothed.faces)
        info = (
            f"**{fps:.1f} frames/s** · {n} face{'s' if n != 1 else ''}"
            f"{': ' + emotion_counts(smoothed.faces) if n else ''} · {result.timing_ms['total']:.0f} ms per frame"
            f" · model: {result.model} (local)"
        )
        if session.dropped:
            info += f" · {session.dropped} frame{'s' if session.dropped != 1 else ''} skipped to keep up"
        annotated = draw_faces(result.image, smoothed)
        session.done = time.perf_counter()
        return annotated, info, session

    return SimpleNamespace(
        analyze_photo=analyze_photo,
        analyze_photos=analyze_photos,
        emotions_in_photo=emotions_in_photo,
        analyze_video=analyze_video,
        emotions_in_video=emotions_in_video,
        live_frame=live_frame,
        workers=photo_workers,
    )


def example_photos() -> list[str]:
    # The multi-face crew portrait first: it shows what the app does with a group.
    folder = Path(__file__).parent / "examples"
    return sorted((str(p) for p in folder.glob("*.jpg")), key=lambda p: ("crew" not in p, p))


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or Settings()
    export_dir = Path(tempfile.gettempdir()) / "emotion-exports"
    handlers = make_handlers(settings, export_dir)
    analyze_photo, analyze_photos, live_frame = handlers.analyze_photo, handlers.analyze_photos, handlers.live_frame
    # Uploads and results live only in Gradio's cache: swept every few minutes of what is older than the limit.
    age = settings.cache_minutes * 60
    with gr.Blocks(title="Facial emotion recognition", delete_cache=(max(60, age // 4), age)) as demo:
        gr.Markdown(INTRO)
        gr.Markdown(f"**Please note:** {NOTICE}", elem_classes="notice")
        with gr.Accordion("Options: model, backend, threshold", open=False):
            with gr.Row():
                model = ModelBox(
                    model_choices(settings),
                    value=settings.model,
                    allow_custom_value=not settings.public,
                    label="Model",
                    info=None if settings.public else "or type a hub id (owner/name) or a local folder",
                    min_width=260,
                )
                threshold = Threshold(
                    0,
                    1,
                    value=settings.threshold,
                    step=0.05,
                    label="Threshold",
                    info="also list every emotion at or above this probability",
                    min_width=220,
                )
            with gr.Row():
                backend = gr.Radio(
                    ["local", "remote"],
                    value="local",
                    label="Backend",
                    info=f"remote = Hugging Face Inference API; with the bundled model it uses {settings.remote_model}",
                    min_width=220,
                )
                token = gr.Textbox(
                    type="password",
                    label="Hugging Face token (remote backend only)",
                    placeholder="hf_... (or set HF_TOKEN)",
                    min_width=220,
                )
        controls = [backend, model, threshold, token]

        with gr.Tab("Photo"):
            with gr.Row():
                with gr.Column(min_width=300):
                    # image_mode=None hands the original file to load_image (16-bit, CMYK, EXIF untouched).
                    image = PhotoInput(
                        type="filepath",
                        image_mode=None,
                        sources=["upload", "webcam", "clipboard"],
                        label="Photo",
                        elem_id="photo-input",
                    )
                    explain = gr.Checkbox(label="Why this emotion? Show a heatmap per face", value=False)
                    button = gr.Button("Analyze", variant="primary")
                    examples_slot = gr.Column()
                with gr.Column(min_width=300):
                    status = gr.Markdown("Upload a photo, take a snapshot or pick an example.", elem_classes="status")
                    annotated = gr.Image(type="filepath", label="Faces", format="jpeg", interactive=False)
                    heatmaps = gr.Gallery(label="Heatmaps", visible="hidden")
                    cards_slot = gr.Column()
            with gr.Accordion("Table, downloads and JSON", open=False):
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Faces", wrap=False)
                downloads = gr.File(label="Downloads (JSON, CSV, full-size image)", file_count="multiple")
                result_json = gr.JSON(label="JSON")

        with gr.Tab("Batch"):  # short tab names: all four fit a phone's width
            gr.Markdown("Several photos at once: all their faces are classified together, in one batch.")
            with gr.Row():
                with gr.Column(min_width=300):
                    files = PhotoFiles(
                        file_count="multiple",
                        file_types=["image"],
                        type="filepath",
                        label="Photos",
                        elem_id="several-files",
                    )
                    batch_button = gr.Button("Analyze all", variant="primary")
                with gr.Column(min_width=300):
                    batch_status = gr.Markdown("Choose up to 12 photos.", elem_classes="status")
                    gallery = gr.Gallery(label="Faces in each photo", columns=2, height="auto", object_fit="contain")
            batch_table = gr.Dataframe(headers=["image", *TABLE_HEADERS], label="All faces", wrap=False)
            with gr.Accordion("Downloads and JSON", open=False):
                batch_downloads = gr.File(label="Downloads (JSON, CSV)", file_count="multiple")
                batch_json = gr.JSON(label="JSON")

        with gr.Tab("Webcam"):
            gr.Markdown(
                "Live analysis runs this server's **local** model (the one chosen in Options); the remote backend "
                "is not used for live video. Boxes follow each face, with scores smoothed over a few frames."
            )
            with gr.Row():
                with gr.Column(min_width=300):
                    live_in = PhotoInput(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
                with gr.Column(min_width=300):
                    live_info = gr.Markdown(
                        "Start the webcam: frames are analysed as fast as this server allows.", elem_id="live-info"
                    )
                    live_out = gr.Image(type="pil", label="Live faces", format="jpeg", interactive=False)
            live_state = gr.State(None)
        with gr.Tab("Video"):
            with gr.Row():
                with gr.Column(min_width=300):
                    video = VideoInput(label="Video", sources=["upload"], elem_id="video-input")
                    sample_fps = gr.Slider(
                        1,
                        15,
                        value=settings.video_sample_fps,
                        step=1,
                        label="Frames analysed per second",
                        info="more follows quick expressions; fewer is faster",
                    )
                    video_button = gr.Button("Analyze video", variant="primary")
                with gr.Column(min_width=300):
                    video_status = gr.Markdown(
                        f"Upload a video (up to {settings.video_max_mb} MB): every face is followed through it.",
                        elem_classes="status",
                    )
                    video_out = gr.Video(label="Faces through the video", interactive=False)
            timeline = gr.LinePlot(
                x="t",
                y="probability",
                color="series",
                x_title="seconds",
                y_title="probability",
                y_lim=[0, 1],
                label="Emotion over time, per face",
                height=320,
                elem_id="timeline",
            )
            video_summary = gr.Dataframe(headers=SUMMARY_HEADERS, label="Each face through the video", wrap=False)
            with gr.Accordion("Downloads and JSON", open=False):
                video_downloads = gr.File(label="Downloads (CSV, JSON)", file_count="multiple")
                video_json = gr.JSON(label="JSON")
        image.limits = files.limits = live_in.limits = video.limits = settings

        # --- Photo tab ---
        photo_outputs = [annotated, table, status, downloads, heatmaps, result_json]
        photo_inputs = [image, *controls, explain]
        show_photo = page_errors(analyze_photo, len(photo_outputs), 2)
        cleared = [None, None, "Working...", None, [], None]
        # The API endpoint: a trigger the page never fires, so API errors raise while the page's show them.
        gr.Button(visible=False).click(
            api_errors(for_api(analyze_photo)), photo_inputs, photo_outputs, api_name="analyze", show_progress="hidden"
        )
        image.input(lambda: cleared, None, photo_outputs, queue=False, api_visibility="private").then(
            lambda im, *rest: show_photo(im, *rest) if im is not None else (None, None, "", None, [], None),
            photo_inputs,
            photo_outputs,
            api_visibility="private",
        )
        button.click(show_photo, photo_inputs, photo_outputs, api_visibility="private")
        with examples_slot:
            gr.Examples(
                example_photos(),
                inputs=image,
                outputs=photo_outputs,
                fn=lambda im: show_photo(im, "local", "", settings.threshold, None, False),
                cache_examples=True,
                cache_mode="lazy",
                api_visibility="private",
                label="Examples (click one)",
            )

        with cards_slot:  # one card per face: its crop (or crop | heatmap) and its top three scores
            # The crops are cut here, after the answer, from the photo itself: the API's answer carries no
            # crop files (each is one more download for every client).
            @gr.render(inputs=[image, heatmaps, result_json], triggers=[result_json.change])
            def face_cards(photo, heat_items, document):
                faces = (document or {}).get("faces") or []
                if not faces or not isinstance(photo, str):
                    return
                folder = request_folder(export_dir, settings.cache_minutes * 60)
                crop_items = [
                    str(save_image(crop, folder, f"face{i}"))
                    for i, crop in enumerate(face_crops_of(photo, faces, settings, document.get("image_size")))
                ]
                if heat_items:
                    gr.HTML(heat_legend_html())  # the colour scale of the overlays
                with gr.Row(equal_height=False):
                    for i, face in enumerate(faces):
                        title = f"Face {i + 1}" + (" · uncertain" if face.get("uncertain") else "")
                        with gr.Column(min_width=150, elem_classes="face-card"), gr.Group():
                            crop = crop_items[i] if i < len(crop_items) else None
                            if heat_items and i < len(heat_items):
                                gr.ImageSlider((crop, _gallery_path(heat_items[i])), label=f"{title} | heatmap")
                            else:
                                gr.Image(crop, label=title, height=150, interactive=False, buttons=[])
                            gr.Label(top_scores_of(face), num_top_classes=3, show_label=False)

        # For agents (MCP) and scripts: the JSON document alone, as text.
        photo_json = gr.Textbox(visible=False, label="JSON")
        gr.Button(visible=False).click(
            api_errors(handlers.emotions_in_photo), [image, *controls], photo_json, api_name="emotions"
        )

        # --- Several photos tab ---
        batch_outputs = [gallery, batch_table, batch_status, batch_downloads, batch_json]
        batch_inputs = [files, *controls]
        gr.Button(visible=False).click(
            api_errors(for_api(analyze_photos)),
            batch_inputs,
            batch_outputs,
            api_name="analyze_batch",
            show_progress="hidden",
        )
        show_photos = page_errors(analyze_photos, len(batch_outputs), 2)
        files.upload(
            lambda: ([], None, "Working...", None, None), None, batch_outputs, queue=False, api_visibility="private"
        ).then(show_photos, batch_inputs, batch_outputs, api_visibility="private")
        files.clear(lambda: ([], None, "", None, None), None, batch_outputs, queue=False, api_visibility="private")
        batch_button.click(show_photos, batch_inputs, batch_outputs, api_visibility="private")

        # --- Video tab: one video at a time (a long one keeps a worker busy) ---
        video_outputs_ = [video_out, timeline, video_summary, video_status, video_downloads, video_json]
        video_inputs = [video, backend, model, threshold, sample_fps, token]
        gr.Button(visible=False).click(
            api_errors(handlers.analyze_video),
            video_inputs,
            video_outputs_,
            api_name="analyze_video",
            concurrency_limit=1,
            concurrency_id="video",
            show_progress="hidden",
        )
        video_json_text = gr.Textbox(visible=False, label="JSON")
        gr.Button(visible=False).click(
            api_errors(handlers.emotions_in_video),
            video_inputs,
            video_json_text,
            api_name="emotions_video",
            concurrency_limit=1,
            concurrency_id="video",
        )
        show_video = page_errors(handlers.analyze_video, len(video_outputs_), 3)
        video_cleared = (None, None, None, "Working...", None, None)
        video.upload(lambda: video_cleared, None, video_outputs_, queue=False, api_visibility="private").then(
            show_video, video_inputs, video_outputs_, api_visibility="private", concurrency_id="video"
        )
        video.clear(
            lambda: (None, None, None, "", None, None), None, video_outputs_, queue=False, api_visibility="private"
        )
        video_button.click(show_video, video_inputs, video_outputs_, api_visibility="private", concurrency_id="video")

        # --- Live tab: frames that waited while another was analysed are dropped by LiveSession.stale ---
        live_in.stream(
            live_frame,
            inputs=[live_in, model, threshold, live_state],
            outputs=[live_out, live_info, live_state],
            stream_every=0.2,
            time_limit=300,
            trigger_mode="multiple",
            concurrency_limit=1,
            api_visibility="private",
            show_progress="hidden",
        )
    demo.photo_workers = handlers.workers  # None, or the worker processes: Workers.close() stops them
    return queue(demo, settings.concurrency, settings.queue_size)


def _gallery_path(item):
    """A gallery item's file path, whatever shape Gradio hands it over in (tuple, dict, FileData)."""
    item = item[0] if isinstance(item, (tuple, list)) else item
    if isinstance(item, dict):
        item = item.get("image", item).get("path") if isinstance(item.get("image", item), dict) else item.get("path")
    return getattr(item, "path", item)


CARD_SIDE = 160  # a face card's crop, in pixels


def face_crops_of(photo: str, faces: list[dict], settings: Settings, size: tuple[int, int] | None = None) -> list:
    """The square region classified for each face of a JSON document, cut from the (upright) photo whose
    size the document gives (``size``). A JPEG is decoded only as large as the smallest region needs for its
    card (emotion.image.load_image's ``reduce``): a 12.8 MP phone photo's crew in about a quarter of the time."""
    if not faces:
        return []
    if size:
        size = tuple(size)
        boxes = [square_box(face["box"], size, settings.margin) for face in faces]
        smallest = min(min(x2 - x1, y2 - y1) for x1, y1, x2, y2 in boxes)
        picture = load_image(photo, settings.max_image_pixels, reduce=max(1, smallest) / CARD_SIDE)
    else:
        picture = load_image(photo, settings.max_image_pixels)
        boxes = [square_box(face["box"], picture.size, settings.margin) for face in faces]
        size = picture.size
    scale = picture.width / size[0]  # the decoded picture against the document's pixels
    crops = [picture.crop(tuple(round(v * scale) for v in box)) for box in boxes]
    return [crop.convert("RGB").resize((CARD_SIDE, CARD_SIDE), Image.BILINEAR) for crop in crops]


def top_scores_of(face: dict) -> dict[str, float]:
    return dict(sorted(face["scores"].items(), key=lambda kv: kv[1], reverse=True)[:3])


def launch_options(settings: Settings) -> dict:
    limit = Middleware(BodyLimit, max_bytes=settings.max_request_mb * 2**20)
    return {
        "max_file_size": f"{max(settings.max_upload_mb, settings.video_max_mb)}mb",  # photos: PhotoInput checks 20
        "app_kwargs": {"middleware": [limit]},
        "css": CSS,
        "mcp_server": True,  # /analyze and /analyze_batch as MCP tools, at /gradio_api/mcp/
    }


def warm_up(settings: Settings) -> threading.Thread:
    """Loads the default model and the detector on a thread of its own while the page is built and the
    server starts, so that the first visitor waits for neither: importing torch and loading both (ONNX Runtime
    sessions for the bundled model) takes about 2 s on two cores, and a first start ever also exports them to
    ONNX (with transformers: about 5 s more)."""

    def load():
        try:
            _share_cores(settings)  # as the request workers are set up: the classifier sessions they will use
            pipeline = Pipeline(settings)
            pipeline.backend("local", "")
            get_detector(settings.detector, settings)
        except Exception as exc:  # the first request will load them, and report what goes wrong
            log.warning("warm-up: %s", exc)

    thread = threading.Thread(target=load, name="warm-up", daemon=True)
    thread.start()
    return thread


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    allocator.tune()  # before the first request's temporaries: see emotion.serving.allocator
    settings = Settings()
    if "EMOTION_WORKERS" not in os.environ:  # one worker process per concurrent request (emotion.serving.workers)
        settings = replace(settings, workers=settings.concurrency)
    if not settings.workers:  # else the workers load the models, each as it starts
        warm_up(settings)
    build_demo(settings).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
