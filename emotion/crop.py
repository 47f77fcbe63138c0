"""Square face crops with a margin, clamped to the image."""

from __future__ import annotations

from PIL import Image


def square_box(box, image_size: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """A square around ``box`` with side max(w, h) * (1 + margin), moved (not cut) to fit the image.

    Only when the square is larger than the image itself is it cut to the image.
    """
    x1, y1, x2, y2 = box
    width, height = image_size
    side = max(x2 - x1, y2 - y1) * (1 + margin)
    side = max(1, min(round(side), width, height))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = min(max(0, round(cx - side / 2)), width - side)
    top = min(max(0, round(cy - side / 2)), height - side)
    return left, top, left + side, top + side


def crop_faces(image: Image.Image, boxes, margin: float) -> list[Image.Image]:
    return [image.crop(square_box(box, image.size, margin)) for box in boxes]
