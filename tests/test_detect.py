"""The real MTCNN on real photos."""

import pytest
import torch
from PIL import Image

from emotion.crop import square_box
from emotion.detectors.mtcnn import MTCNNDetector
from emotion.image import load_image
from tests.conftest import PHOTOS, photo

_detectors = {}


def detect_faces(image, max_side: int = 1600):
    if max_side not in _detectors:
        _detectors[max_side] = MTCNNDetector(torch.device("cpu"), max_side=max_side)
    return _detectors[max_side](image)


def test_apollo_crew_has_three_faces():
    faces = detect_faces(load_image(photo("nasa_apollo11_crew.jpg")))
    assert len(faces) == 3
    assert all(f.score > 0.95 and len(f.landmarks) == 5 for f in faces)


def test_no_face_is_an_empty_list():
    assert detect_faces(load_image(photo("noface_pen.jpg"))) == []


@pytest.mark.parametrize("name", ["codait_bryan.png", "codait_luciano.png", "skimage_camera.png"])
def test_rgba_and_greyscale_photos(name):
    assert len(detect_faces(load_image(photo(name)))) == 1


def test_tiny_images_give_no_face():
    assert detect_faces(Image.new("RGB", (1, 1))) == []
    assert detect_faces(Image.new("RGB", (11, 40))) == []


def test_downscaled_detection_maps_boxes_back():
    image = load_image(photo("nasa_apollo11_crew.jpg"))
    full = sorted(f.box for f in detect_faces(image))
    half = sorted(f.box for f in detect_faces(image, max_side=300))  # detected at half size
    assert len(half) == 3
    for a, b in zip(full, half):
        assert all(abs(x - y) < 8 for x, y in zip(a, b))


@pytest.mark.parametrize(
    "box, size, expected",
    [
        ((40, 40, 60, 60), (100, 100), (38, 38, 62, 62)),  # margin 0.2: side 24 around centre 50
        ((0, 0, 20, 30), (100, 100), (0, 0, 36, 36)),  # pushed inside at the corner, not cut
        ((90, 90, 100, 100), (100, 100), (88, 88, 100, 100)),
        ((0, 0, 100, 50), (100, 50), (25, 0, 75, 50)),
    ],  # larger than the image: cut to it, centred
)
def test_square_box(box, size, expected):
    assert square_box(box, size, margin=0.2) == expected


def test_twelve_megapixel_photo_is_detected_downscaled_with_boxes_mapped_back():
    image = load_image(photo("nasa_apollo11_crew.jpg"))
    scale = 4000 / image.width  # 4000 x 3140: 12.6 MP
    big = image.resize((4000, round(image.height * scale)), Image.BICUBIC)
    small_boxes = sorted(f.box for f in detect_faces(image))
    big_boxes = sorted(f.box for f in detect_faces(big))  # default max_side: detected at 1600 px
    assert len(big_boxes) == 3
    for a, b in zip(small_boxes, big_boxes):
        assert all(abs(x * scale - y) < 0.05 * 4000 / 6 for x, y in zip(a, b))


def test_downscaling_loses_no_face_of_the_shared_photos():
    photo("nasa_apollo11_crew.jpg")  # skips when ../shared is absent, instead of checking nothing
    paths = [p for p in sorted(PHOTOS.glob("*.*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    assert len(paths) >= 10
    for path in paths:
        image = load_image(path)
        assert len(detect_faces(image)) == len(detect_faces(image, max_side=10_000)), path.name
