"""Pictures and texts for user interfaces: labelled boxes, face crops, heatmap overlays, status lines, tables.

Everything here turns an Analysis into something a person reads; nothing here decides anything.
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from emotion.image import REDUCING_GAP, shrunk
from emotion.labels import LABELS
from emotion.results import Analysis, Face

# One colour per emotion, used for boxes and legends alike.
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

# Box labels are drawn into the picture, so their size on screen depends on how far the browser shrinks it.
# A phone shows a picture about PHONE_CSS_WIDTH CSS px wide; sizing the text for that keeps it at least
# LABEL_CSS_PX there, and larger on a desktop.
PHONE_CSS_WIDTH = 350
LABEL_CSS_PX = 13
DISPLAY_SIDE = 1024  # the annotated picture shown in the page (the download keeps the full size)
# Pictures are made smaller with BICUBIC (larger with LANCZOS): a 1280 x 1920 photo to 1024 px in 38 instead of
# 53 ms, the pixels within 0.3 of 255 of LANCZOS's on average, and no difference to see side by side.
SHRINK = Image.BICUBIC


@lru_cache(maxsize=32)
def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def label_font_px(width: int) -> int:
    """Text height in image pixels that renders at >= LABEL_CSS_PX when the picture fills a phone's width."""
    return max(12, round(LABEL_CSS_PX * width / PHONE_CSS_WIDTH))


def face_caption(index: int, face: Face) -> str:
    """'1 happy 80%'; a weak answer is marked with '?': '2 sad? 34%'."""
    names = " + ".join(face.above_threshold) if len(face.above_threshold) > 1 else face.label
    return f"{index} {names}{'?' if face.uncertain else ''} {face.confidence:.0%}"


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def draw_faces(
    image: Image.Image,
    result: Analysis,
    min_side: int = 512,
    max_side: int | None = None,
    captions: list[str] | None = None,
) -> Image.Image:
    """A copy of ``image``, resized so its longer side is within [min_side, max_side], with each face's box,
    number, label and confidence (or ``captions``). Uncertain faces get a thin box and a '?'."""
    longest = max(image.size)
    scale = max(1.0, min_side / longest)
    if max_side and longest * scale > max_side:
        scale = max_side / longest
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    if scale < 1:
        # The resize is the copy drawn on (a 12 MP photo is not copied whole first), and a photo several times
        # larger has blocks of pixels averaged first (emotion.image.REDUCING_GAP).
        canvas, _ = shrunk(rgb, round(longest * scale), SHRINK, REDUCING_GAP)
    elif scale > 1:
        canvas = rgb.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)
    else:
        canvas = rgb.copy()  # drawn on: the caller's picture stays as it is
    draw = ImageDraw.Draw(canvas)
    font = _font(label_font_px(canvas.width))
    width = max(2, round(font.size / 7))
    taken = []  # label rectangles already drawn: a label that would cover one goes below its box
    for i, face in enumerate(result.faces, start=1):
        color = COLORS[face.label]
        x1, y1, x2, y2 = (v * scale for v in face.box)
        draw.rectangle((x1, y1, x2, y2), outline=color, width=max(1, width // 2) if face.uncertain else width)
        text = captions[i - 1] if captions else face_caption(i, face)
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2 * width, bottom - top + 2 * width
        tx = min(max(0, x1), max(0, canvas.width - tw))
        ty = y1 - th if y1 - th >= 0 else y1  # above the box when there is room, else inside its top edge
        if any(_overlaps((tx, ty, tx + tw, ty + th), r) for r in taken):
            ty = min(y2, canvas.height - th)
        taken.append((tx, ty, tx + tw, ty + th))
        draw.rectangle((tx, ty, tx + tw, ty + th), fill=color)
        draw.text(
            (tx + width - left, ty + width - top),
            text,
            font=font,
            fill="black" if face.label in _DARK_TEXT else "white",
        )
    return canvas


# The heatmap palette: cold regions stay see-through (the face shows), hot ones turn yellow, then red.
HEAT_STOPS = ((0.0, (40, 40, 255)), (0.4, (0, 200, 255)), (0.7, (255, 230, 0)), (1.0, (255, 0, 0)))


def _heat_colors(heat: np.ndarray) -> np.ndarray:
    at = [s for s, _ in HEAT_STOPS]
    return np.stack([np.interp(heat, at, [c[ch] for _, c in HEAT_STOPS]) for ch in range(3)], axis=-1)


def heatmap_overlay(crop: Image.Image, heat, size: int = 320) -> Image.Image:
    """The face crop with its relevance heatmap on top: opacity grows with relevance, so the face stays visible."""
    face = np.asarray(crop.convert("RGB").resize((size, size), Image.BILINEAR), dtype=float)
    heat = np.asarray(Image.fromarray(np.asarray(heat, dtype=np.float32)).resize((size, size), Image.BILINEAR))
    heat = np.clip(heat, 0, 1)
    alpha = (0.15 + 0.55 * heat)[..., None]
    return Image.fromarray((face * (1 - alpha) + _heat_colors(heat) * alpha).astype("uint8"))


def heat_legend_html() -> str:
    """The colour scale of heatmap_overlay as a small HTML bar."""
    stops = ", ".join(f"rgb{c} {s:.0%}" for s, c in HEAT_STOPS)
    return (
        '<div class="heat-legend"><span>low</span>'
        f'<span class="heat-bar" style="background: linear-gradient(to right, {stops})"></span>'
        "<span>high relevance</span></div>"
    )


def heatmap_gallery(result: Analysis, size: int = 320) -> list[tuple[Image.Image, str]]:
    """(overlay, caption) for every face of an analysis that carries a heatmap."""
    return [
        (heatmap_overlay(result.image.crop(f.crop_box), f.heatmap, size), f"{i}: {f.label}")
        for i, f in enumerate(result.faces, start=1)
        if f.heatmap is not None and result.image is not None
    ]


def emotion_counts(faces) -> str:
    """'2 happy, 1 neutral' (most frequent first)."""
    counts = Counter(f.label for f in faces)
    return ", ".join(f"{n} {label}" for label, n in counts.most_common())


def status_text(result: Analysis, seconds: float) -> str:
    """The one-line answer: faces per emotion, uncertain ones, skipped ones, and the time taken."""
    n = len(result.faces)
    if n == 0:
        return (
            f"**No face found** in this photo ({seconds:.2f} s). Try one where faces are larger, frontal and well lit."
        )
    text = f"**{n} face{'s' if n != 1 else ''}: {emotion_counts(result.faces)}** · {seconds:.2f} s"
    unsure = sum(f.uncertain for f in result.faces)
    if unsure:
        text += f" · {unsure} uncertain (marked ?: a weak or close call)"
    if result.faces_dropped:
        text += f" · {result.faces_dropped} smaller face(s) skipped (limit {n} per photo)"
    return text


def table_rows(result: Analysis) -> list[list]:
    """Rows for a results table: face number, label, confidence, uncertain, above threshold, box, then all seven."""
    return [
        [
            i,
            f.label,
            round(f.confidence, 3),
            "yes" if f.uncertain else "",
            ", ".join(f.above_threshold),
            str(list(f.box)),
        ]
        + [round(f.scores[k], 3) for k in LABELS]
        for i, f in enumerate(result.faces, start=1)
    ]


def batch_table_rows(named: list[tuple[str, Analysis]]) -> list[list]:
    return [[name, *row] for name, result in named for row in table_rows(result)]


TABLE_HEADERS = ["face", "label", "confidence", "uncertain", "above threshold", "box", *LABELS]
