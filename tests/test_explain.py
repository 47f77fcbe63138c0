"""Heatmaps must be faithful: hiding the hottest region hurts the prediction more than hiding a random one."""

import numpy as np
import torch
from PIL import Image, ImageDraw

from emotion.backends.local import LocalClassifier
from emotion.crop import crop_faces
from emotion.detectors.mtcnn import MTCNNDetector
from emotion.explain import explain
from emotion.image import load_image
from tests.conftest import photo

PHOTOS = [
    "nasa_apollo11_crew.jpg",
    "skimage_astronaut.png",
    "codait_luciano.png",
    "pexels_neutral.jpeg",
    "pexels_happy_baby.jpeg",
    "pexels_sad_baby.jpeg",
    "pexels_surprised.jpeg",
    "skimage_camera.png",
]


def hottest_square(heat: np.ndarray, k: int) -> tuple[int, int]:
    """Top-left corner of the k x k window with the largest heat sum."""
    s = np.pad(heat.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = s[k:, k:] - s[:-k, k:] - s[k:, :-k] + s[:-k, :-k]
    y, x = np.unravel_index(np.argmax(sums), sums.shape)
    return int(x), int(y)


def masked(crop: Image.Image, x: int, y: int, k: int) -> Image.Image:
    out = crop.copy()
    fill = tuple(int(v) for v in np.asarray(crop).reshape(-1, 3).mean(0))
    ImageDraw.Draw(out).rectangle((x, y, x + k - 1, y + k - 1), fill=fill)
    return out


def test_masking_the_hottest_region_lowers_the_prediction_more_than_random():
    clf = LocalClassifier("bundled", "cpu")
    crops, detect = [], MTCNNDetector(torch.device("cpu"))
    for name in PHOTOS:
        image = load_image(photo(name))
        crops += crop_faces(image, [d.box for d in detect(image)], 0.25)
    assert len(crops) >= 8
    heatmaps = explain(clf, crops)
    base = clf(crops)
    rng = np.random.default_rng(0)
    hot_drops, random_drops = [], []
    for crop, heat, p in zip(crops, heatmaps, base):
        c, k = int(p.argmax()), max(4, crop.width // 3)  # a third of the side: one ninth of the face
        x, y = hottest_square(heat, k)
        randoms = [masked(crop, *rng.integers(0, crop.width - k + 1, 2), k) for _ in range(8)]
        probs = clf([masked(crop, x, y, k), *randoms])[:, c]
        hot_drops.append(p[c] - probs[0])
        random_drops.append(float(np.mean(p[c] - probs[1:])))
    hot, rand = np.array(hot_drops), np.array(random_drops)
    print(
        f"{len(crops)} faces: mean drop hottest {hot.mean():.3f}, random {rand.mean():.3f}; "
        f"hottest larger for {(hot > rand).sum()} faces"
    )
    assert hot.mean() > rand.mean() + 0.02
    assert (hot > rand).mean() >= 0.6


def test_heatmaps_have_the_crop_shape_and_range(tiny_model):
    crops = [
        Image.new("RGB", (50, 50), "gray"),
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 70, 3), dtype=np.uint8)),
    ]
    heatmaps = explain(LocalClassifier(str(tiny_model), "cpu"), crops)
    assert [h.shape for h in heatmaps] == [(50, 50), (70, 70)]
    assert all(h.min() >= 0 and h.max() <= 1 for h in heatmaps)
    assert explain(LocalClassifier(str(tiny_model), "cpu"), []) == []
