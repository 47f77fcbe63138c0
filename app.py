"""Gradio app: wires the `emotion` package into a web UI and the /analyze API. Nothing heavy at import."""

from __future__ import annotations

import contextvars
import functools
import logging
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import gradio as gr
import numpy as np
from starlette.middleware import Middleware

from emotion.errors import EmotionError
from emotion.image import image_size, load_image
from emotion.pipeline import Pipeline
from emotion.serving.export import request_folder, save_image, write_exports
from emotion.serving.render import (
    TABLE_HEADERS,
    batch_table_rows,
    draw_faces,
    heatmap_gallery,
    probability_chart,
    table_rows,
)
from emotion.serving.track import FaceTracker, LiveSession
from emotion.serving.uploads import BodyLimit, checked_upload, data_url_to_file
from emotion.settings import BUNDLED, HUB_MODELS, Settings

log = logging.getLogger(__name__)

INTRO = """# Facial emotion recognition
Upload a photo or take a webcam snapshot. Every face is found (MTCNN), and all faces are
classified together into **angry, disgust, fear, happy, sad, surprise, neutral** by a
Vision Transformer. The default model is bundled and runs offline; hub models download on first use."""


class PhotoInput(gr.Image):
    """gr.Image that accepts only what a visitor really sent (emotion.serving.uploads): an uploaded file or a
    checked data: URL, measured from its header before anything decodes it. Failures become messages."""

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
            raise gr.Error(str(exc)) from None


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
            raise gr.Error(f"{len(files)} photos is too many at once: the limit is {limits.max_batch_photos}.")
        try:
            return [checked_upload(f.path, limits.max_upload_mb * 2**20) for f in files]
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None


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
        raise gr.Error(f"explain must be true or false, not {explain!r}.")
    return explain


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
        raise gr.Error(
            f"These photos hold {total / 1e6:.0f} MP together; the limit is {settings.max_batch_pixels / 1e6:.0f} MP "
            "per batch. Send fewer or smaller photos."
        )


def make_handlers(settings: Settings, export_dir: Path):
    pipeline = Pipeline(settings)
    # The model work of every request runs on these few long-lived threads. Gradio hands each request to
    # whichever of its (up to 40, short-lived) pool threads is free; torch and the allocator keep memory
    # per thread, so that churn grew the server by megabytes per request. Gradio's queue already admits
    # only ``concurrency`` requests at once, so this pool never makes one wait.
    workers = ThreadPoolExecutor(settings.concurrency + 1, thread_name_prefix="emotion-work")

    def on_workers(handler):
        @functools.wraps(handler)  # Gradio reads the signature (defaults, gr.Progress) through __wrapped__
        def run(*args, **kwargs):
            context = contextvars.copy_context()  # Gradio's request context: progress bars, errors
            return workers.submit(context.run, handler, *args, **kwargs).result()

        return run

    @on_workers
    def analyze_photo(image, backend, model, threshold, token=None, explain=None):
        """Analyze every face in a photo: annotated photo, chart, table, message, downloads, heatmaps, JSON."""
        if image is None:
            raise gr.Error("Upload a photo or take a webcam snapshot first.")
        options = _options(backend, model, threshold, token)
        explain = _check_explain(explain)
        remote_explain = explain and options["backend"] != "local"
        try:
            result = pipeline.analyze(image, explain=explain and not remote_explain, **options)
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        message = result.message
        if remote_explain:
            message += " Heatmaps need the local backend (the Inference API returns scores only)."
        folder = request_folder(export_dir, settings.cache_minutes * 60)
        downloads = write_exports([(Path(image).name, result)], folder)
        return (
            str(save_image(draw_faces(result.image, result), folder, "faces")),
            probability_chart(result),
            table_rows(result),
            message,
            [str(p) for p in downloads],
            [(str(save_image(im, folder, f"heatmap{i}")), c) for i, (im, c) in enumerate(heatmap_gallery(result))],
            result.to_dict(),
        )

    @on_workers
    def analyze_photos(files, backend, model, threshold, token=None, progress=gr.Progress()):
        """Analyze several photos; all their faces are classified in one batch."""
        if not files:
            raise gr.Error("Choose one or more photos first.")
        paths = [getattr(f, "name", f) for f in files]
        _batch_pixels(paths, settings)
        progress(0, desc="Finding faces")
        try:
            batch = pipeline.analyze_many(
                paths,
                **_options(backend, model, threshold, token),
                progress=lambda done, total: progress(done / total, desc=f"Photo {done}/{total}"),
            )
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        named = list(batch.results)
        folder = request_folder(export_dir, settings.cache_minutes * 60)
        gallery = [(str(save_image(draw_faces(r.image, r), folder, f"faces{i}")), n) for i, (n, r) in enumerate(named)]
        faces = sum(len(r.faces) for _, r in named)
        message = f"{faces} face(s) in {len(named)} photo(s), classified in one batch."
        if batch.errors:
            message += "\n\n" + "\n".join(f"- {name}: {error}" for name, error in batch.errors)
        downloads = write_exports(named, folder) if named else []
        document = {"photos": {name: r.to_dict() for name, r in named}, "errors": dict(batch.errors)}
        return gallery, batch_table_rows(named), message, [str(p) for p in downloads], document

    live = Pipeline(replace(settings, detect_max_side=640))  # webcam frames: speed first

    @on_workers
    def live_frame(frame, model, threshold, session):
        """One webcam frame: labelled boxes with per-face smoothed scores, and the frame rate."""
        if frame is None:
            return gr.skip(), gr.skip(), session
        session = session or LiveSession(FaceTracker(threshold=threshold))
        if session.stale(time.perf_counter()):
            return gr.skip(), gr.skip(), session
        session.tracker.threshold = threshold
        try:
            result = live.analyze(frame, model=model, threshold=threshold)
        except EmotionError as exc:
            return gr.skip(), f"Error: {exc}", session
        smoothed = session.tracker.update(result)
        fps = session.tick(time.perf_counter())
        info = (
            f"**{fps:.1f} fps** · {len(smoothed.faces)} face(s) · {result.timing_ms['total']:.0f} ms per frame"
            f" · {session.dropped} stale frame(s) dropped"
        )
        annotated = draw_faces(result.image, smoothed)
        session.done = time.perf_counter()
        return annotated, info, session

    return analyze_photo, analyze_photos, live_frame


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or Settings()
    analyze_photo, analyze_photos, live_frame = make_handlers(settings, Path(tempfile.gettempdir()) / "emotion-exports")
    # Uploads and results live only in Gradio's cache: swept every few minutes of what is older than the limit.
    age = settings.cache_minutes * 60
    with gr.Blocks(title="Facial emotion recognition", delete_cache=(max(60, age // 4), age)) as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                with gr.Tab("Photo"):
                    # image_mode=None hands the original file to load_image (16-bit, CMYK, EXIF untouched).
                    image = PhotoInput(
                        type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"], label="Photo"
                    )
                    explain = gr.Checkbox(label="Why this emotion? Show a heatmap per face", value=False)
                    button = gr.Button("Analyze", variant="primary")
                with gr.Tab("Several photos"):
                    files = PhotoFiles(file_count="multiple", file_types=["image"], type="filepath", label="Photos")
                    batch_button = gr.Button("Analyze all", variant="primary")
                    gallery = gr.Gallery(label="Faces in each photo", columns=2, height="auto")
                    batch_table = gr.Dataframe(
                        headers=["image", *TABLE_HEADERS], label="Results of all photos", wrap=True
                    )
                with gr.Tab("Live webcam"):
                    live_in = PhotoInput(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
                    image.limits = files.limits = live_in.limits = settings
                    live_out = gr.Image(type="pil", label="Live faces (scores smoothed per face)", format="jpeg")
                    live_info = gr.Markdown("Start the webcam: frames are analysed as fast as the machine allows.")
                    live_state = gr.State(None)
                with gr.Row():
                    backend = gr.Radio(
                        ["local", "remote"],
                        value="local",
                        label="Backend",
                        info="remote = Hugging Face Inference API (needs a token)",
                    )
                    threshold = Threshold(
                        0,
                        1,
                        value=settings.threshold,
                        step=0.05,
                        label="Threshold",
                        info="also list every emotion at or above this probability",
                    )
                model = ModelBox(
                    model_choices(settings),
                    value=settings.model,
                    allow_custom_value=not settings.public,
                    label="Model",
                    info=None if settings.public else "or type a hub id (owner/name) or a local folder",
                )
                token = gr.Textbox(
                    type="password",
                    label="Hugging Face token (remote backend only)",
                    placeholder="hf_... (or set HF_TOKEN)",
                )
            with gr.Column(scale=1):
                annotated = gr.Image(type="filepath", label="Faces")
                status = gr.Markdown()
                downloads = gr.File(label="Download results (JSON, CSV)", file_count="multiple")
                heatmaps = gr.Gallery(
                    label="Why this emotion? (red: regions that drove the prediction)", columns=4, height="auto"
                )
        chart = gr.Plot(label="Probabilities per face")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Results", wrap=True)
        result_json = gr.JSON(label="JSON")
        examples = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpg"))
        if examples:
            gr.Examples(examples, inputs=image)
        controls = [backend, model, threshold, token]
        button.click(
            analyze_photo,
            inputs=[image, *controls, explain],
            outputs=[annotated, chart, table, status, downloads, heatmaps, result_json],
            api_name="analyze",
        )
        batch_button.click(
            analyze_photos,
            inputs=[files, *controls],
            outputs=[gallery, batch_table, status, downloads, result_json],
            api_name="analyze_batch",
        )
        # Frames that waited while another was analysed are dropped by LiveSession.stale, not worked through.
        live_in.stream(
            live_frame,
            inputs=[live_in, model, threshold, live_state],
            outputs=[live_out, live_info, live_state],
            stream_every=0.2,
            time_limit=300,
            trigger_mode="multiple",
            concurrency_limit=1,
            api_name=False,
        )
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    return demo


def launch_options(settings: Settings) -> dict:
    limit = Middleware(BodyLimit, max_bytes=settings.max_request_mb * 2**20)
    import os

    if os.environ.get("NOLIMIT"):
        return {"max_file_size": f"{settings.max_upload_mb}mb"}
    return {"max_file_size": f"{settings.max_upload_mb}mb", "app_kwargs": {"middleware": [limit]}}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    build_demo(settings).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
