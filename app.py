"""Gradio app: wires the `emotion` package into a web UI and the /analyze API. Nothing heavy at import."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import gradio as gr
from PIL import Image

from emotion.errors import EmotionError
from emotion.image import load_image
from emotion.pipeline import analyze_image
from emotion.render import TABLE_HEADERS, draw_faces, probability_chart, table_rows
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


def make_handler(settings: Settings):
    def analyze_photo(image, backend, model, threshold, token=None):
        """Analyze every face in a photo. Returns the annotated photo, a chart, a table, a message and the JSON."""
        if image is None:
            raise gr.Error("Upload a photo or take a webcam snapshot first.")
        try:
            start = time.perf_counter()
            picture = load_image(image, settings.max_image_pixels)
            result = analyze_image(
                picture,
                backend=backend or "local",
                model=(model or "").strip(),
                threshold=threshold,
                token=token or None,
                settings=settings,
                load_ms=(time.perf_counter() - start) * 1000,
            )
        except EmotionError as exc:
            raise gr.Error(str(exc)) from None
        return (
            draw_faces(picture, result),
            probability_chart(result),
            table_rows(result),
            result.message,
            result.to_dict(),
        )

    return analyze_photo


def build_demo(settings: Settings | None = None) -> gr.Blocks:
    settings = settings or Settings()
    with gr.Blocks(title="Facial emotion recognition") as demo:
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column(scale=1):
                # image_mode=None hands the original file to load_image (16-bit, CMYK, EXIF untouched).
                image = PhotoInput(
                    type="filepath", image_mode=None, sources=["upload", "webcam", "clipboard"], label="Photo"
                )
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
                button = gr.Button("Analyze", variant="primary")
            with gr.Column(scale=1):
                annotated = gr.Image(type="pil", label="Faces", format="png")
                status = gr.Markdown()
        chart = gr.Plot(label="Probabilities per face")
        table = gr.Dataframe(headers=TABLE_HEADERS, label="Results", wrap=True)
        result_json = gr.JSON(label="JSON")
        examples_dir = Path(__file__).parent / "examples"
        examples = sorted(str(p) for p in examples_dir.glob("*.jpg"))
        if examples:
            gr.Examples(examples, inputs=image)
        button.click(
            make_handler(settings),
            inputs=[image, backend, model, threshold, token],
            outputs=[annotated, chart, table, status, result_json],
            api_name="analyze",
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
