"""Loading every kind of image a browser or client may send."""

import io

import numpy as np
import pytest
from PIL import Image

from emotion.errors import InputError
from emotion.image import load_image
from tests.conftest import photo


def encode(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def gradient(w=64, h=48) -> Image.Image:
    a = np.zeros((h, w, 3), np.uint8)
    a[..., 0] = np.linspace(0, 255, w)[None, :]
    a[..., 1] = np.linspace(0, 255, h)[:, None]
    return Image.fromarray(a)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = load_image(encode(rgba, "PNG"))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_real_rgba_and_greyscale_photos():
    assert load_image(photo("codait_bryan.png")).mode == "RGB"
    grey = load_image(photo("skimage_camera.png"))
    assert grey.mode == "RGB" and grey.size == (512, 512)


def test_palette_with_transparency():
    p = Image.new("P", (8, 8), 0)
    p.putpalette([10, 20, 30] + [0, 0, 0] * 255)
    p.info["transparency"] = 0
    assert load_image(encode(p, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)


def test_cmyk_jpeg():
    out = load_image(encode(gradient().convert("CMYK"), "JPEG"))
    assert out.mode == "RGB" and out.size == (64, 48)


def test_16bit_png_uses_the_full_range():
    a = (np.arange(64 * 48).reshape(48, 64) * 20).astype(np.uint16)  # 0 .. 61420
    out = load_image(encode(Image.fromarray(a), "PNG"))
    values = np.asarray(out)[..., 0]
    assert out.mode == "RGB" and values.min() == 0 and values.max() == 255


def test_exif_orientation_is_applied():
    image = gradient(64, 48)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = load_image(encode(image, "JPEG", exif=exif.tobytes()))
    assert out.size == (48, 64)


def test_animated_gif_gives_first_frame():
    frames = [Image.new("RGB", (16, 16), c) for c in [(255, 0, 0), (0, 0, 255)]]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    r, g, b = load_image(data).getpixel((8, 8))
    assert r > 200 and b < 50


def test_numpy_arrays():
    assert load_image(np.zeros((10, 12), np.uint8)).size == (12, 10)
    assert load_image(np.ones((10, 12, 4), np.float32)).getpixel((0, 0)) == (255, 255, 255)
    with pytest.raises(InputError):
        load_image(np.zeros((2, 3, 5)))


def test_one_pixel_image_loads():
    assert load_image(encode(Image.new("RGB", (1, 1)), "PNG")).size == (1, 1)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not an image"),
        (encode(gradient(640, 480), "JPEG")[:2000], "could not be decoded"),
    ],
    ids=["empty", "text", "truncated-jpeg"],
)
def test_bad_input_is_a_clear_error(data, message):
    with pytest.raises(InputError, match=message):
        load_image(data)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="No such image"):
        load_image(tmp_path / "nope.jpg")


def test_pixel_limit_refuses_bombs_before_decoding():
    # A 30000x30000 PNG compresses to a few hundred kB; it must be refused from its header.
    big = encode(Image.new("L", (30000, 30000)), "PNG")
    with pytest.raises(InputError, match="too large|limit"):
        load_image(big)
    with pytest.raises(InputError, match="limit is 1 MP"):
        load_image(encode(gradient(2000, 1000), "PNG"), max_pixels=1_000_000)


def test_shrunk_leaves_small_images_and_shrinks_big_ones_plainly_or_with_blocks_averaged_first():
    from emotion.image import REDUCING_GAP, shrunk

    small = gradient(400, 300)
    assert shrunk(small, 1600) == (small, 1.0)  # the very image: no copy made
    big = load_image(photo("nasa_apollo11_crew.jpg")).resize((4032, 3165), Image.BICUBIC)
    for side, resample in ((1600, Image.BILINEAR), (1024, Image.BICUBIC)):
        out, scale = shrunk(big, side, resample)
        assert out.size == (side, round(3165 * side / 4032)) and scale == side / 4032
        plain = np.asarray(big.resize(out.size, resample), dtype=float)
        assert np.array_equal(np.asarray(out, dtype=float), plain)  # by default one plain resize
        fast, _ = shrunk(big, side, resample, REDUCING_GAP)
        diff = np.abs(np.asarray(fast, dtype=float) - plain)
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4  # the same picture to the eye
        assert diff.max() > 0  # and not the plain resize itself: the blocks were averaged first


def test_a_jpeg_may_be_decoded_smaller_for_a_preview_and_still_upright():
    image = gradient(800, 600)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())
    assert load_image(data).size == (600, 800)
    assert load_image(data, reduce=2.5).size == (300, 400)  # DCT scaling 1/2: at most 2.5 times smaller
    assert load_image(data, reduce=9).size == (75, 100)  # 1/8 is JPEG's smallest
    small = np.asarray(load_image(data, reduce=2), dtype=float)
    full = np.asarray(load_image(data).resize((300, 400), Image.BOX), dtype=float)
    assert np.abs(small - full).mean() < 2  # the same picture, upright
    assert load_image(encode(image, "PNG"), reduce=4).size == (800, 600)  # other formats: the full size
    mpo = encode(image, "MPO", save_all=True, append_images=[image])  # some phone cameras' JPEG files
    assert load_image(mpo, reduce=2).size == (400, 300)
