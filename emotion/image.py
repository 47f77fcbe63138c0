"""Load any image a browser or client can send as an 8-bit RGB PIL image, upright."""

from __future__ import annotations

import io
import logging
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from emotion.errors import InputError

log = logging.getLogger(__name__)

ImageInput = str | Path | bytes | Image.Image | np.ndarray
# Shrinking a picture several times over, PIL can first average whole blocks of pixels (Image.reduce), then
# resample what is left, a step of at most this ratio: a 12.8 MP photo to 1024 px took 40 ms (BICUBIC) against
# 196 ms for one plain LANCZOS resize (python -m emotion.bench, end_to_end), the pixels within one level of
# 255 of it on average. For the picture shown only: the detector's copy stays a plain resize, the copy that
# stock MTCNN is compared with (averaged blocks moved boxes by up to 1.1 px of the copy).
REDUCING_GAP = 1.0
NOT_AN_IMAGE = "The file is not an image this app can read (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, QOI...)."


def load_image(source: ImageInput, max_pixels: int = 40_000_000, reduce: float = 1.0) -> Image.Image:
    """Return ``source`` as an RGB image with its EXIF orientation applied.

    Accepts a path, raw bytes, a PIL image or a numpy array. Greyscale, palette,
    RGBA (composited on white), CMYK and 16-bit images are converted; animated
    images give their first frame. Raises InputError with a readable message.

    ``reduce`` over 1, for previews: a JPEG file may be decoded up to that many times smaller per side (its
    DCT scaling: 1/2, 1/4 or 1/8, about 4x faster at 1/2); the image's size says what it got.
    """
    if isinstance(source, np.ndarray):
        return _from_array(source)
    if isinstance(source, Image.Image):
        image = source
    else:
        image = _open(source)
    _check_size(image, max_pixels)
    try:
        image.seek(0)  # first frame of an animation
        if reduce > 1 and image.format in ("JPEG", "MPO"):  # MPO: a phone camera's JPEG with extra frames
            image.draft(image.mode, (math.ceil(image.width / reduce), math.ceil(image.height / reduce)))
        image.load()
        image = ImageOps.exif_transpose(image) or image
        return _to_rgb(image)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  see _open: a damaged file may fail in any decoder
        log.info("decoding failed: %s: %s", type(exc).__name__, exc)
        raise InputError("The image could not be decoded: is the file complete and undamaged?") from exc


def shrunk(
    image: Image.Image, max_side: int, resample=Image.BILINEAR, reducing_gap: float | None = None
) -> tuple[Image.Image, float]:
    """``image`` resized so its longer side is at most ``max_side`` (itself when it is already), and the scale;
    ``reducing_gap``: see REDUCING_GAP (None: one plain resize)."""
    w, h = image.size
    scale = min(1.0, max_side / max(w, h))
    if scale == 1.0:
        return image, scale
    return image.resize((round(w * scale), round(h * scale)), resample, reducing_gap=reducing_gap), scale


def image_size(
    source: str | Path | bytes, max_pixels: int = 40_000_000, max_bytes: int | None = None
) -> tuple[int, int]:
    """Width and height read from the file's header, without decoding its pixels (nor reading them).

    InputError when the file is over ``max_bytes``, over ``max_pixels`` or not an image: a request can
    be refused before it costs any decoding memory or time.
    """
    if isinstance(source, (str, Path)):
        path = _existing(source)
        if max_bytes is not None:
            _check_bytes(path.stat().st_size, max_bytes)
        with open(path, "rb") as stream:
            image = _from_stream(stream)
            _check_size(image, max_pixels)
            return image.size
    if max_bytes is not None:
        _check_bytes(len(source), max_bytes)
    image = _open(source)
    _check_size(image, max_pixels)
    return image.size


def _existing(source: str | Path) -> Path:
    path = Path(source)
    if not path.is_file():
        raise InputError(f"No such image file: {path.name}")
    if path.stat().st_size == 0:
        raise InputError("The file is empty.")
    return path


def _check_bytes(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise InputError(f"The file is {size / 2**20:.0f} MB; the limit is {max_bytes / 2**20:.0f} MB.")


def _open(source: str | Path | bytes) -> Image.Image:
    if isinstance(source, (str, Path)):
        data = _existing(source).read_bytes()  # read once, so no file stays open behind a lazy image
    elif isinstance(source, (bytes, bytearray)):
        data = bytes(source)
    else:
        raise InputError(f"Cannot read an image from a {type(source).__name__}.")
    if not data:
        raise InputError("The file is empty.")
    return _from_stream(io.BytesIO(data))


def _from_stream(stream) -> Image.Image:
    """PIL's lazy open: the header is parsed, the pixels are not decoded."""
    try:
        with warnings.catch_warnings():
            # Our own pixel limit is checked next; PIL's bomb check would only warn or raise later.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise InputError(f"The image is too large to process ({exc}).") from exc
    except Exception as exc:  # noqa: BLE001  a decoder fed hostile bytes may raise anything (struct.error...)
        raise InputError(NOT_AN_IMAGE) from exc


def _check_size(image: Image.Image, max_pixels: int) -> None:
    w, h = image.size
    if w * h > max_pixels:
        raise InputError(
            f"The image is {w}x{h} pixels ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP. "
            "Please upload a smaller image."
        )
    if w < 1 or h < 1:
        raise InputError("The image has no pixels.")


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit or float greyscale: stretch the used range onto 0..255 rather than clipping.
        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return Image.fromarray(a.round().astype(np.uint8), "L").convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _from_array(array: np.ndarray) -> Image.Image:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise InputError(f"An image array must be HxW, HxWx3 or HxWx4, not {a.shape}.")
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and a.max() <= 1.0:
            a = a * 255
        a = np.clip(a, 0, 255).astype(np.uint8)
    return _to_rgb(Image.fromarray(a))
