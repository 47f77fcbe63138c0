"""Gradio app: wires the `emotion` package into a web UI and the /analyze API. Nothing heavy at import."""

from __future__ import annotations

import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import gradio as gr
from PIL import Image

from emotion.errors import EmotionError
from emotion.pipeline import Pipeline
from emotion.serving.export import write_exports
from emotion.serving.render import (
    TABLE_HEADERS,
    batch_table_rows,
    draw_faces,
    heatmap_gallery,
    probability_chart,
    table_rows,
)
from emotion.serving.track import FaceTracker, LiveSession
from emotion.settings import BUNDLED, HUB_MODELS, Settings

log = logging.getLogger(__name__)

INTRO = """# Facial emotion recognition
Upload a photo or take a webcam snapshot. Every face is found (MTCNN), and all faces are
classified together into **angry, disgust, fear, happy, sad, surprise, neutral** by a
Vision Transformer. The default model is bundled and runs offline; hub models download on first use."""


class PhotoInput(gr.Image):
    """gr.Image whose unreadable uploads become a readable message instead of a generic failure."""

    is_template = True  # the browser side stays the stock Image component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Image.DecompressionBombError:
            raise gr.Error("The image is too large to process. Please upload a smaller image.") from None
        except (OSError, ValueError, SyntaxError):
            raise gr.Error("The file is not an image this app can read (JPEG, PNG, WebP, GIF, BMP, TIFF...).") from None


def model_choices(settings: Settings) -> list[tuple[str, str]]:
    choices = [("bundled: our hybrid ViT trained on FER-2013 (offline)", BUNDLED)]
    choices += [(m, m) for m in HUB_MODELS]
    if settings.model not in (BUNDLED, *HUB_MODELS):
        choices.insert(0, (settings.model, settings.model))
    return choices


def _options(backend, model, threshold, token) -> dict:
    return {
        "backend": backend or "local",
        "model": (model or "").strip(),
        "threshold": threshold,
        "token": token or None,
    }


def make_handlers(settings: Settings, export_dir: Path):
    pipeline = Pipeline(settings)

    def analyze_photo(image, backend, model, threshold, token=None, explain=None):
        """Analyze every face in a photo: annotated photo, chart, table, message, downloads, heatmaps, JSON."""
        if image is None:
            raise gr.Error("Upload a photo or take a webcam snapshot first.")
        options = _options(backend, model, threshold, token)
        explain = False if explain is None else explain
        remote_explain = explain is True and options["backend"] != "local"
        try:
            result = pipeline.analyze(image, explain=explain and not remote_explain, **options)
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        message = result.message
        if remote_explain:
            message += " Heatmaps need the local backend (the Inference API returns scores only)."
        downloads = write_exports([(Path(image).name, result)], export_dir)
        return (
            draw_faces(result.image, result),
            probability_chart(result),
            table_rows(result),
            message,
            [str(p) for p in downloads],
            heatmap_gallery(result),
            result.to_dict(),
        )

    def analyze_photos(files, backend, model, threshold, token=None, progress=gr.Progress()):
        """Analyze several photos; all their faces are classified in one batch."""
        if not files:
            raise gr.Error("Choose one or more photos first.")
        paths = [getattr(f, "name", f) for f in files]
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
        gallery = [(draw_faces(r.image, r), name) for name, r in named]
        faces = sum(len(r.faces) for _, r in named)
        message = f"{faces} face(s) in {len(named)} photo(s), classified in one batch."
        if batch.errors:
            message += "\n\n" + "\n".join(f"- {name}: {error}" for name, error in batch.errors)
        downloads = write_exports(named, export_dir) if named else []
        document = {"photos": {name: r.to_dict() for name, r in named}, "errors": dict(batch.errors)}
        return gallery, batch_table_rows(named), message, [str(p) for p in downloads], document

    live = Pipeline(replace(settings, detect_max_side=640))  # webcam frames: speed first

    def live_frame(frame, model, threshold, session):
        """One webcam frame: labelled boxes with per-face smoothed scores, and the frame rate."""
        if frame is None:
            return gr.skip(), gr.skip(), session
        session = session or LiveSession(FaceTracker(threshold=threshold))
        if session.stale(time.perf_counter()):
            return gr.skip(), gr.skip(), session
        session.tracker.threshold = threshold
        try:
            result = live.analyze(frame, model=(model or "").strip(), threshold=threshold)
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
    # Uploads and results live only in Gradio's cache, which is swept hourly.
    with gr.Blocks(title="Facial emotion recognition", delete_cache=(1800, 3600)) as demo:
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
                    files = gr.File(file_count="multiple", file_types=["image"], label="Photos")
                    batch_button = gr.Button("Analyze all", variant="primary")
                    gallery = gr.Gallery(label="Faces in each photo", columns=2, height="auto")
                    batch_table = gr.Dataframe(
                        headers=["image", *TABLE_HEADERS], label="Results of all photos", wrap=True
                    )
                with gr.Tab("Live webcam"):
                    live_in = gr.Image(sources=["webcam"], streaming=True, type="numpy", label="Webcam")
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
                    threshold = gr.Slider(
                        0,
                        1,
                        value=settings.threshold,
                        step=0.05,
                        label="Threshold",
                        info="also list every emotion at or above this probability",
                    )
                model = gr.Dropdown(
                    model_choices(settings),
                    value=settings.model,
                    allow_custom_value=True,
                    label="Model",
                    info="or type a hub id (owner/name) or a local folder",
                )
                token = gr.Textbox(
                    type="password",
                    label="Hugging Face token (remote backend only)",
                    placeholder="hf_... (or set HF_TOKEN)",
                )
            with gr.Column(scale=1):
                annotated = gr.Image(type="pil", label="Faces", format="png")
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
    return {"max_file_size": f"{settings.max_upload_mb}mb"}


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = Settings()
    build_demo(settings).launch(**launch_options(settings))


if __name__ == "__main__":
    main()
