"""Bad input through the real server: a clear message or an empty result, and the server keeps serving."""

import io

import numpy as np
import pytest
from gradio_client import handle_file
from PIL import Image

from emotion.image import load_image
from tests.conftest import photo
from tests.test_pipeline import check_schema


def analyze(client, path, **kw):
    return client.predict(
        handle_file(str(path)),
        kw.get("backend", "local"),
        kw.get("model", ""),
        kw.get("threshold", 0.3),
        api_name="/analyze",
    )[-1]


def apollo() -> Image.Image:
    return load_image(photo("nasa_apollo11_crew.jpg"))


@pytest.fixture
def still_serving(client):
    yield
    check_schema(analyze(client, photo("codait_bryan.png")), 1)


def save(tmp_path, name, image: Image.Image, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


@pytest.mark.usefixtures("still_serving")
class TestRefused:
    def test_not_an_image(self, client, tmp_path):
        path = tmp_path / "notes.png"
        path.write_text("hello, I am text")
        with pytest.raises(Exception, match="not an image this app can read"):
            analyze(client, path)

    def test_truncated_jpeg(self, client, tmp_path):
        data = io.BytesIO()
        apollo().save(data, "JPEG")
        path = tmp_path / "cut.jpg"
        path.write_bytes(data.getvalue()[: len(data.getvalue()) // 3])
        with pytest.raises(Exception, match="could not be decoded"):
            analyze(client, path)

    def test_decompression_bomb(self, client, tmp_path):
        path = save(tmp_path, "bomb.png", Image.new("L", (30000, 30000)))
        assert path.stat().st_size < 2_000_000
        with pytest.raises(Exception, match="too large"):
            analyze(client, path)

    def test_upload_size_limit(self, client, tmp_path):
        path = tmp_path / "huge.png"
        path.write_bytes(b"\x89PNG" + bytes(21 * 1024 * 1024))
        with pytest.raises(Exception, match="(?i)file size|too large|exceeds|the limit is 20 MB"):
            analyze(client, path)


@pytest.mark.parametrize(
    "name, make",
    [
        ("grey16.png", lambda im: Image.fromarray(np.asarray(im.convert("L"), np.uint16) * 257)),
        ("cmyk.jpg", lambda im: im.convert("CMYK")),
        ("palette.png", lambda im: im.convert("P", palette=Image.Palette.ADAPTIVE)),
    ],
)
def test_image_modes_find_the_three_astronauts(client, tmp_path, name, make):
    check_schema(analyze(client, save(tmp_path, name, make(apollo()))), 3)


def test_animated_gif_uses_the_first_frame(client, tmp_path):
    first, blank = apollo(), Image.new("RGB", (600, 471), "white")
    path = save(tmp_path, "anim.gif", first, save_all=True, append_images=[blank], duration=200, loop=0)
    check_schema(analyze(client, path), 3)


def test_exif_rotated_photo_boxes_land_on_the_faces(client, tmp_path):
    upright = analyze(client, photo("nasa_apollo11_crew.jpg"))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    stored = apollo().transpose(Image.Transpose.ROTATE_90)
    doc = analyze(client, save(tmp_path, "rotated.jpg", stored, exif=exif.tobytes(), quality=95))
    assert doc["image_size"] == [600, 471]
    check_schema(doc, 3)
    for a, b in zip(upright["faces"], doc["faces"]):
        assert all(abs(x - y) <= 6 for x, y in zip(a["box"], b["box"]))


def test_one_pixel_image_is_an_empty_result(client, tmp_path):
    doc = analyze(client, save(tmp_path, "dot.png", Image.new("RGB", (1, 1))))
    assert doc["faces"] == [] and "No face" in doc["message"]
