"""The face cards' crops (app.face_crops_of): cut from the photo after the answer, for the page."""

import os

import numpy as np
from PIL import Image

from emotion.pipeline import Pipeline
from emotion.settings import Settings
from tests.conftest import photo

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def test_a_phone_photos_cards_come_from_a_smaller_decode_and_match_the_full_ones(tmp_path, monkeypatch):
    import app

    path = tmp_path / "crew_12mp.jpg"
    Image.open(photo("nasa_apollo11_crew.jpg")).convert("RGB").resize((4032, 3165), Image.BICUBIC).save(path)
    settings = Settings()
    document = Pipeline(settings).analyze(path).to_dict()
    full = app.face_crops_of(str(path), document["faces"], settings)
    decoded = []
    real = app.load_image
    monkeypatch.setattr(app, "load_image", lambda *a, **k: decoded.append(real(*a, **k)) or decoded[-1])
    reduced = app.face_crops_of(str(path), document["faces"], settings, document["image_size"])
    assert decoded[0].size == (2016, 1583)  # JPEG's 1/2 scale: every face's region still over 160 px there
    assert len(full) == len(reduced) == 3
    for a, b in zip(full, reduced):
        assert a.size == b.size == (app.CARD_SIDE, app.CARD_SIDE)
        assert np.abs(np.asarray(a, dtype=float) - np.asarray(b, dtype=float)).mean() < 4
    assert app.face_crops_of(str(path), [], settings, document["image_size"]) == []  # no face: no card
