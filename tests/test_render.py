"""What a person reads: captions, status lines, box labels and heatmap overlays."""

import numpy as np
from PIL import Image

from emotion.labels import LABELS
from emotion.results import Analysis, Face
from emotion.serving.render import (
    draw_faces,
    face_caption,
    heatmap_overlay,
    label_font_px,
    status_text,
    table_rows,
)


def face(label: str, p: float, uncertain: bool = False, box=(10, 40, 60, 100)) -> Face:
    rest = (1 - p) / 6
    scores = {k: (p if k == label else rest) for k in LABELS}
    return Face(box, 0.99, scores, (label,), uncertain=uncertain, crop_box=box)


def test_an_uncertain_face_says_so_in_its_caption_table_and_status():
    weak, strong = face("sad", 0.34, uncertain=True), face("happy", 0.9, box=(100, 40, 150, 100))
    result = Analysis((weak, strong), "bundled", "local", (200, 150))
    assert face_caption(1, weak) == "1 sad? 34%" and face_caption(2, strong) == "2 happy 90%"
    assert [row[3] for row in table_rows(result)] == ["yes", ""]
    text = status_text(result, 0.123)
    assert text.startswith("**2 faces: 1 sad, 1 happy**") and "0.12 s" in text and "1 uncertain" in text


def test_no_face_status():
    assert "No face found" in status_text(Analysis((), "bundled", "local", (10, 10)), 0.05)


def test_box_labels_grow_with_the_picture_so_a_phone_shows_them_at_11_css_px_or_more():
    for width in (300, 600, 1024, 4000):
        assert label_font_px(width) * 350 / width >= 11  # shrunk to a phone's 350 CSS px
    image = Image.new("RGB", (3000, 2000), "white")
    result = Analysis((face("happy", 0.9, box=(100, 400, 600, 1000)),), "bundled", "local", image.size)
    shown = draw_faces(image, result, max_side=1024)
    assert shown.size == (1024, 683)
    # The label's fill spans at least the drawn text height above the box.
    column = np.asarray(shown)[:, 40]
    filled = np.where((column != 255).any(axis=1))[0]
    assert len(filled) >= label_font_px(1024)


def test_a_heatmap_overlay_keeps_the_face_visible_where_the_map_is_cold():
    rng = np.random.default_rng(0)
    crop = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    heat = np.zeros((64, 64))
    heat[:16, :16] = 1.0
    overlay = np.asarray(heatmap_overlay(crop, heat, size=64), dtype=float)
    original = np.asarray(crop, dtype=float)
    cold = np.corrcoef(overlay[32:, 32:].ravel(), original[32:, 32:].ravel())[0, 1]
    assert cold > 0.95  # the face's own detail survives under a cold map
    hot = overlay[2:14, 2:14].reshape(-1, 3).mean(0)
    assert hot[0] > 150 and hot[2] < 120  # hot regions turn red


def test_request_folders_expire_with_a_sweep_at_most_once_a_minute(tmp_path, monkeypatch):
    import os
    import time

    from emotion.serving import export

    root = tmp_path / "exports"
    root.mkdir()

    def old_folder(name):
        folder = root / name
        folder.mkdir()
        (folder / "faces.jpg").write_bytes(b"x")
        past = time.time() - 3600
        os.utime(folder, (past, past))
        return folder

    stale = old_folder("stale")
    first = export.request_folder(root, max_age_s=600)
    assert first.is_dir() and not stale.exists()  # the first request of the process sweeps
    later = old_folder("later")
    second = export.request_folder(root, max_age_s=600)
    assert second.is_dir() and second != first and later.exists()  # not again within the minute
    now = time.time()
    monkeypatch.setattr(export.time, "time", lambda: now + export.SWEEP_EVERY_S)
    export.request_folder(root, max_age_s=600)
    assert not later.exists() and first.is_dir() and second.is_dir()  # a minute on: swept, fresh ones kept


def test_a_big_photo_is_shown_as_a_plain_lanczos_resize_would_show_it():
    from tests.conftest import photo

    image = Image.open(photo("nasa_apollo11_crew.jpg")).convert("RGB").resize((4032, 3165), Image.BICUBIC)
    shown = draw_faces(image, Analysis((), "bundled", "local", image.size), max_side=1024)
    plain = image.resize(shown.size, Image.LANCZOS)
    assert shown.size == (1024, 804) and shown.mode == "RGB"
    diff = np.abs(np.asarray(shown, dtype=float) - np.asarray(plain, dtype=float))
    assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 4


def test_drawing_leaves_the_callers_picture_as_it_was():
    for size in ((800, 600), (3000, 2000)):  # drawn at its own size, and on a smaller copy
        image = Image.new("RGB", size, "white")
        result = Analysis((face("happy", 0.9, box=(100, 100, 400, 400)),), "bundled", "local", image.size)
        shown = draw_faces(image, result, max_side=1024)
        assert np.asarray(image).min() == 255 and np.asarray(shown).min() < 255
