"""Gradio app: wires the `emotion` package into a web UI and the /analyze API. Nothing heavy at import."""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from emotion.errors import EmotionError
from emotion.export import write_exports
from emotion.image import load_image
from emotion.pipeline import analyze_batch, analyze_image
from emotion.render import TABLE_HEADERS, batch_table_rows, draw_faces, probability_chart, table_rows
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
    choices = [("bundled: our LeViT trained on FER-2013 (offline)", BUNDLED)]
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
    def analyze_photo(image, backend, model, threshold, token=None):
        """Analyze every face in a photo: annotated photo, chart, table, message, downloads and the JSON."""
        if image is None:
            raise gr.Error("Upload a photo or take a webcam snapshot first.")
        try:
            start = time.perf_counter()
            picture = load_image(image, settings.max_image_pixels)
            result = analyze_image(
                picture,
                settings=settings,
                load_ms=(time.perf_counter() - start) * 1000,
                **_options(backend, model, threshold, token),
            )
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        downloads = write_exports([(Path(image).name, result)], export_dir)
        return (
            draw_faces(picture, result),
            probability_chart(result),
            table_rows(result),
            result.message,
            [str(p) for p in downloads],
            result.to_dict(),
        )

    def analyze_photos(files, backend, model, threshold, token=None, progress=gr.Progress()):
        """Analyze several photos; all their faces are classified in one batch."""
        if not files:
            raise gr.Error("Choose one or more photos first.")
        paths = [getattr(f, "name", f) for f in files]
        progress(0, desc="Finding faces")
        try:
            batch = analyze_batch(
                paths,
                settings=settings,
                **_options(backend, model, threshold, token),
                progress=lambda done, total: progress(done / total, desc=f"Photo {done}/{total}"),
            )
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        named = list(batch.results)
        gallery = [(draw_faces(p, r), name) for p, (name, r) in zip(batch.pictures, named)]
        faces = sum(len(r.faces) for _, r in named)
        message = f"{faces} face(s) in {len(named)} photo(s), classified in one batch."
        if batch.errors:
            message += "\n\n" + "\n".join(f"- {name}: {error}" for name, error in batch.errors)
        downloads = write_exports(named, export_dir) if named else []
        document = {"photos": {name: r.to_dict() for name, r in named}, "errors": dict(batch.errors)}
        return gallery, batch_table_rows(named), message, [str(p) for p in downloads], document

    return analyze_photo, analyze_photos


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or Settings()
    analyze_photo, analyze_photos = make_handlers(settings, Path(tempfile.gettempdir()) / "emotion-exports")
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
                    button = gr.Button("Analyze", variant="primary")
                with gr.Tab("Several photos"):
                    files = gr.File(file_count="multiple", file_types=["image"], label="Photos")
                    batch_button = gr.Button("Analyze all", variant="primary")
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
                gallery = gr.Gallery(label="Faces in each photo", columns=2, height="auto")
                status = gr.Markdown()
                downloads = gr.File(label="Download results (JSON, CSV)", file_count="multiple")
        chart = gr.Plot(label="Probabilities per face")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Results", wrap=True)
        batch_table = gr.Dataframe(headers=["image", *TABLE_HEADERS], label="Results of all photos", wrap=True)
        result_json = gr.JSON(label="JSON")
        examples = sorted(str(p) for p in (Path(__file__).parent / "examples").glob("*.jpg"))
        if examples:
            gr.Examples(examples, inputs=image)
        controls = [backend, model, threshold, token]
        button.click(
            analyze_photo,
            inputs=[image, *controls],
            outputs=[annotated, chart, table, status, downloads, result_json],
            api_name="analyze",
        )
        batch_button.click(
            analyze_photos,
            inputs=[files, *controls],
            outputs=[gallery, batch_table, status, downloads, result_json],
            api_name="analyze_batch",
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
