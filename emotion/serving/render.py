"""Drawing: labelled boxes on a copy of the photo, and a probability chart per face."""

from __future__ import annotations

from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from emotion.labels import LABELS
from emotion.results import Analysis

# One colour per emotion, used for boxes and bars alike.
COLORS = {
    "angry": "#e53935",
    "disgust": "#43a047",
    "fear": "#8e24aa",
    "happy": "#fdd835",
    "sad": "#1e88e5",
    "surprise": "#fb8c00",
    "neutral": "#9e9e9e",
}
_DARK_TEXT = {"happy", "neutral", "surprise"}  # light fills get black text


@lru_cache(maxsize=32)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def face_caption(index: int, face) -> str:
    names = " + ".join(face.above_threshold) if len(face.above_threshold) > 1 else face.label
    return f"{index} {names} {face.confidence:.0%}"


def draw_faces(image: Image.Image, result: Analysis, min_side: int = 512) -> Image.Image:
    """A copy of ``image`` with each face's box, number, label and confidence.

    Small images are enlarged first so the text stays legible; lines and text
    scale with the image so they also read on a 4000-px photo.
    """
    scale = max(1.0, min_side / max(image.size))
    canvas = image.convert("RGB")
    if scale > 1:
        canvas = canvas.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    draw = ImageDraw.Draw(canvas)
    short = min(canvas.size)
    width = max(2, round(short / 250))
    font = _font(max(12, round(short / 32)))
    for i, face in enumerate(result.faces, start=1):
        color = COLORS[face.label]
        x1, y1, x2, y2 = (v * scale for v in face.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=width)
        text = face_caption(i, face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        # Above the box when there is room, else inside its top edge; kept within the canvas.
        ty = y1 - th if y1 - th >= 0 else y1
        tx = min(max(0, x1), max(0, canvas.width - tw))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=color)
        draw.text(
            (tx + width - left, ty + width - top),
            text,
            font=font,
            fill="black" if face.label in _DARK_TEXT else "white",
        )
    return canvas


def probability_chart(result: Analysis, columns: int = 3):
    """A matplotlib Figure: one horizontal bar chart of the seven probabilities per face."""
    from matplotlib.figure import Figure  # no pyplot: no global state shared between requests

    n = max(1, len(result.faces))
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(3.6 * cols, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[len(result.faces) :]:
        ax.axis("off")
    if not result.faces:
        axes[0].text(0.5, 0.5, "No face found", ha="center", va="center", fontsize=14)
        return fig
    for i, (ax, face) in enumerate(zip(axes, result.faces), start=1):
        values = [face.scores[k] for k in LABELS]
        ax.barh(LABELS, values, color=[COLORS[k] for k in LABELS])
        ax.invert_yaxis()
        ax.set_xlim(0, 1)
        ax.set_title(f"Face {i}: {face.label} ({face.confidence:.0%})", fontsize=10)
        ax.tick_params(labelsize=8)
        for y, v in enumerate(values):
            ax.text(min(v + 0.02, 0.85), y, f"{v:.0%}", va="center", fontsize=7)
    return fig


def table_rows(result: Analysis) -> list[list]:
    """Rows for a results table: face number, label, confidence, above threshold, box, then all seven."""
    return [
        [i, f.label, round(f.confidence, 3), ", ".join(f.above_threshold), str(list(f.box))]
        + [round(f.scores[k], 3) for k in LABELS]
        for i, f in enumerate(result.faces, start=1)
    ]


def heatmap_overlay(crop: Image.Image, heat, size: int = 224) -> Image.Image:
    """The face crop with its relevance heatmap blended on top (red = drove the prediction)."""
    import numpy as np
    from matplotlib import colormaps

    colored = (colormaps["jet"](np.asarray(heat, dtype=float))[..., :3] * 255).astype("uint8")
    overlay = Image.blend(crop.convert("RGB"), Image.fromarray(colored).resize(crop.size), alpha=0.45)
    return overlay.resize((size, size), Image.BILINEAR)


def heatmap_gallery(result: Analysis) -> list[tuple[Image.Image, str]]:
    """(overlay, caption) for every face of an analysis that carries a heatmap."""
    return [
        (heatmap_overlay(result.image.crop(f.crop_box), f.heatmap), f"{i}: {f.label}")
        for i, f in enumerate(result.faces, start=1)
        if f.heatmap is not None and result.image is not None
    ]


def batch_table_rows(named: list[tuple[str, Analysis]]) -> list[list]:
    return [[name, *row] for name, result in named for row in table_rows(result)]


TABLE_HEADERS = ["face", "label", "confidence", "above threshold", "box", *LABELS]
