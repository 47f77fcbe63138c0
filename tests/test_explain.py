"""Heatmaps must be faithful beyond a prior: hiding what the heatmap ranks first must hurt the prediction
more than hiding what a fixed, model-free "look at the mouth" map ranks first.

Deletion curve: each face crop (the real MTCNN on the shared photos, margin 0.25) is cut into a 12 x 12
grid of cells, the cells are ranked by a map's mean heat, and the top 5, 10, 20, 30 and 50 % of the
cells are hidden; the predicted emotion's probability after each step, with 0 % first, gives a curve
whose area (trapezoids over the fraction hidden, divided by 0.5: a mean probability) is lower the more
faithful the map. Three kinds of map are compared with the model's heatmap: a Gaussian over the mouth,
one over the eyes and mouth, and random rankings.

Hidden cells are filled with the crop's mean colour, a different fill from the grey that the heatmap
occludes with: a heatmap computed with the test's own fill would be partly graded on its own homework.
A blurred copy is measured and printed as well (a gentler removal that leaves no flat squares); the
assertions are on the mean-colour fill.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFilter

from emotion.backends.local import LocalClassifier
from emotion.crop import crop_faces
from emotion.detectors.mtcnn import MTCNNDetector
from emotion.explain import explain
from emotion.image import load_image
from tests.conftest import PHOTOS as PHOTO_DIR
from tests.conftest import photo

FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5)
CELLS = 12  # the deletion test ranks CELLS x CELLS cells of each crop
RANDOM_MAPS = 2  # random rankings per face, averaged
MOUTH = ((0.5, 0.72),)  # crop coordinates; MTCNN's mouth corners average (0.39, 0.72) and (0.65, 0.72)
EYES = ((0.36, 0.42), (0.64, 0.42))  # ... its eyes (0.38, 0.42) and (0.66, 0.41), margin 0.25


def face_photos() -> list[str]:
    """Every shared photo (noface_pen.jpg adds no crop)."""
    if not PHOTO_DIR.is_dir():
        pytest.skip(f"{PHOTO_DIR} is not available")
    return sorted(p.name for p in PHOTO_DIR.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


@pytest.fixture(scope="module")
def faces():
    """(classifier, crops, heatmaps, explain seconds for the Apollo crew's 3 faces)."""
    clf = LocalClassifier("bundled", "cpu")
    detect = MTCNNDetector(torch.device("cpu"))
    crops, apollo = [], []
    for name in face_photos():
        image = load_image(photo(name))
        found = crop_faces(image, [d.box for d in detect(image)], 0.25)
        crops += found
        apollo += found if name == "nasa_apollo11_crew.jpg" else []
    assert len(crops) >= 12 and len(apollo) == 3
    heatmaps = explain(clf, crops)  # also warms the model up for the timing below
    start = time.perf_counter()
    explain(clf, apollo)
    return clf, crops, heatmaps, time.perf_counter() - start


def gaussians(crop: Image.Image, centres, sigma: float) -> np.ndarray:
    y, x = np.mgrid[0 : crop.height, 0 : crop.width]
    u, v = (x + 0.5) / crop.width, (y + 0.5) / crop.height
    return sum(np.exp(-((u - cx) ** 2 + (v - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres)


def mouth_prior(crop: Image.Image) -> np.ndarray:
    return gaussians(crop, MOUTH, 0.15)


def eyes_mouth_prior(crop: Image.Image) -> np.ndarray:
    return gaussians(crop, EYES, 0.1) + gaussians(crop, MOUTH, 0.12)


def edges(n: int) -> np.ndarray:
    return np.linspace(0, n, CELLS + 1).round().astype(int)


def cell_means(heat: np.ndarray) -> np.ndarray:
    ys, xs = edges(heat.shape[0]), edges(heat.shape[1])
    return np.array([[heat[ys[i] : ys[i + 1], xs[j] : xs[j + 1]].mean() for j in range(CELLS)] for i in range(CELLS)])


def mean_fill(crop: Image.Image) -> np.ndarray:
    pixels = np.asarray(crop)
    return np.broadcast_to(pixels.reshape(-1, 3).mean(0).round().astype(np.uint8), pixels.shape)


def blur_fill(crop: Image.Image) -> np.ndarray:
    return np.asarray(crop.filter(ImageFilter.GaussianBlur(crop.width / 12)))


def hidden(crop: Image.Image, cells: np.ndarray, fill) -> list[Image.Image]:
    """Copies of ``crop`` with the top FRACTIONS of cells (by ``cells``, CELLS x CELLS scores) replaced."""
    order = np.argsort(-cells.ravel(), kind="stable")
    ys, xs = edges(crop.height), edges(crop.width)
    pixels, replacement = np.asarray(crop), fill(crop)
    out = []
    for f in FRACTIONS:
        copy = pixels.copy()
        for idx in order[: round(f * CELLS * CELLS)]:
            i, j = divmod(int(idx), CELLS)
            copy[ys[i] : ys[i + 1], xs[j] : xs[j + 1]] = replacement[ys[i] : ys[i + 1], xs[j] : xs[j + 1]]
        out.append(Image.fromarray(copy))
    return out


def deletion_auc(clf, crops, rankings, fill) -> np.ndarray:
    """Per face: the area under the predicted class's probability as the top cells are hidden."""
    base = clf(crops)
    predicted = base.argmax(1)
    copies = [c for crop, cells in zip(crops, rankings) for c in hidden(crop, cells, fill)]
    probs = clf(copies).reshape(len(crops), len(FRACTIONS), -1)
    curves = np.array([[base[k, c], *probs[k, :, c]] for k, c in enumerate(predicted)])
    fractions = np.array((0, *FRACTIONS))
    return np.trapezoid(curves, fractions, axis=1) / fractions[-1]


def test_heatmap_deletion_curve_beats_a_mouth_prior(faces):
    clf, crops, heatmaps, seconds = faces
    rng = np.random.default_rng(0)
    rankings = {
        "heatmap": [cell_means(h) for h in heatmaps],
        "mouth prior": [cell_means(mouth_prior(c)) for c in crops],
        "eyes+mouth prior": [cell_means(eyes_mouth_prior(c)) for c in crops],
    }
    aucs = {}
    for fill_name, fill in (("mean colour", mean_fill), ("blur", blur_fill)):
        aucs[fill_name] = {name: deletion_auc(clf, crops, r, fill) for name, r in rankings.items()}
        randoms = [deletion_auc(clf, crops, rng.random((len(crops), CELLS, CELLS)), fill) for _ in range(RANDOM_MAPS)]
        aucs[fill_name]["random"] = np.mean(randoms, 0)
        heat = aucs[fill_name]["heatmap"]
        print(
            f"\ndeletion AUC, {fill_name} fill, {len(crops)} faces: "
            + ", ".join(f"{name} {a.mean():.3f}" for name, a in aucs[fill_name].items())
            + f"; heatmap lower than the mouth prior on {(heat < aucs[fill_name]['mouth prior']).sum()}, "
            f"than eyes+mouth on {(heat < aucs[fill_name]['eyes+mouth prior']).sum()}"
        )
    print(f"explain, 3 faces (Apollo 11 crew): {seconds:.2f} s")
    a = aucs["mean colour"]
    # Measured (13 faces on 11 photos; the old 6 x 6 grid of thirds in brackets): heatmap 0.228 (0.262),
    # mouth prior 0.277, eyes+mouth 0.318, random 0.51; the heatmap lower than the mouth prior on 10 of 13
    # faces (6). Blur fill: 0.259 vs 0.292, 7 of 13. Neighbouring settings (grids of 7 to 10, windows of
    # 0.3 to 0.375) measured 0.223 to 0.240 and 7 to 11 faces, and resizing the crops to 192 px first
    # moved the count to 8: the count swings by a face or two, so it asks for a majority only, and the
    # mean keeps about half its measured margin. The old heatmap fails the mean (0.262 > 0.252).
    assert a["heatmap"].mean() < a["mouth prior"].mean() - 0.025
    assert (a["heatmap"] < a["mouth prior"]).mean() > 0.5
    assert a["heatmap"].mean() < a["eyes+mouth prior"].mean() - 0.05
    # The priors themselves are far better than chance: the reason a hot-vs-random test proves little.
    assert a["mouth prior"].mean() < a["random"].mean() - 0.1
    # Blurring is a different removal; the heatmap must still not lose to the mouth prior there.
    assert aucs["blur"]["heatmap"].mean() < aucs["blur"]["mouth prior"].mean()


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


def test_hiding_the_hottest_ninth_lowers_the_prediction_more_than_random(faces):
    """The old, weaker test, kept as a cheap sanity check: the mouth prior passes it too (printed)."""
    clf, crops, heatmaps, _ = faces
    base = clf(crops)
    rng = np.random.default_rng(0)
    drops = {"heatmap": [], "mouth prior": [], "random": []}
    for crop, heat, p in zip(crops, heatmaps, base):
        c, k = int(p.argmax()), max(4, crop.width // 3)  # a third of the side: one ninth of the face
        randoms = [masked(crop, *rng.integers(0, crop.width - k + 1, 2), k) for _ in range(8)]
        hot = [masked(crop, *hottest_square(m, k), k) for m in (heat, mouth_prior(crop))]
        probs = clf([*hot, *randoms])[:, c]
        drops["heatmap"].append(p[c] - probs[0])
        drops["mouth prior"].append(p[c] - probs[1])
        drops["random"].append(float(np.mean(p[c] - probs[2:])))
    d = {name: np.array(v) for name, v in drops.items()}
    print(f"\nhottest ninth, {len(crops)} faces: mean drop " + ", ".join(f"{n} {v.mean():.3f}" for n, v in d.items()))
    # Measured: heatmap 0.420, mouth prior 0.322, random 0.129 (the old 6 x 6 heatmap: 0.377 vs random 0.091).
    assert d["heatmap"].mean() > d["random"].mean() + 0.05
    assert (d["heatmap"] > d["random"]).mean() >= 0.6
    assert d["mouth prior"].mean() > d["random"].mean() + 0.05  # why this test alone proves little


def test_heatmaps_have_the_crop_shape_and_range(tiny_model):
    crops = [
        Image.new("RGB", (50, 50), "gray"),
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 70, 3), dtype=np.uint8)),
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 64, 3), dtype=np.uint8)),
    ]
    clf = LocalClassifier(str(tiny_model), "cpu")
    heatmaps = explain(clf, crops)
    assert [h.shape for h in heatmaps] == [(50, 50), (70, 70), (40, 64)]
    assert all(h.min() >= 0 and h.max() <= 1 for h in heatmaps)
    assert [h.shape for h in explain(clf, crops[:1], grid=3, batch=2, window=0.5)] == [(50, 50)]
    assert explain(clf, []) == []
