"""analyze() end to end: real MTCNN, real (tiny) ViT, real photos."""

import pytest

import emotion
from emotion.errors import InputError
from emotion.labels import LABELS
from emotion.settings import Settings
from tests.conftest import photo


def check_schema(doc: dict, n_faces: int):
    assert set(doc) >= {"faces", "model", "backend", "image_size", "timing_ms"}
    assert len(doc["faces"]) == n_faces
    assert set(doc["timing_ms"]) >= {"detect", "classify", "total"}
    w, h = doc["image_size"]
    for face in doc["faces"]:
        x1, y1, x2, y2 = face["box"]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert 0 < face["detection_score"] <= 1
        assert list(face["scores"]) == list(LABELS)
        assert abs(sum(face["scores"].values()) - 1) < 1e-5
        assert face["label"] == max(face["scores"], key=face["scores"].get)
        assert all(face["scores"][k] >= 0.3 for k in face["above_threshold"])
        top, second = sorted(face["scores"].values(), reverse=True)[:2]
        assert face["uncertain"] is (top < 0.5 or top - second < 0.1)
    xs = [f["box"][0] for f in doc["faces"]]
    assert xs == sorted(xs), "faces are ordered left to right"


def test_apollo_crew(tiny_model):
    result = emotion.analyze(photo("nasa_apollo11_crew.jpg"), model=str(tiny_model), threshold=0.3)
    assert result.backend == "local" and result.image_size == (600, 471)
    check_schema(result.to_dict(), 3)


def test_no_face_is_an_empty_result_with_a_message(tiny_model):
    result = emotion.analyze(photo("noface_pen.jpg"), model=str(tiny_model))
    assert result.faces == () and "No face" in result.message
    check_schema(result.to_dict(), 0)


def test_face_cap_keeps_the_largest(tiny_model):
    settings = Settings(max_faces=2)
    result = emotion.analyze(photo("nasa_apollo11_crew.jpg"), model=str(tiny_model), settings=settings)
    full = emotion.analyze(photo("nasa_apollo11_crew.jpg"), model=str(tiny_model))
    assert len(result.faces) == 2 and result.faces_dropped == 1
    areas = sorted(((f.box[2] - f.box[0]) * (f.box[3] - f.box[1]), f.box) for f in full.faces)
    assert {f.box for f in result.faces} == {b for _, b in areas[1:]}
    assert "limit" in result.message


def test_threshold_lists_every_label_above_it(tiny_model):
    result = emotion.analyze(photo("codait_luciano.png"), model=str(tiny_model), threshold=0.0)
    assert len(result.faces[0].above_threshold) == 7
    strict = emotion.analyze(photo("codait_luciano.png"), model=str(tiny_model), threshold=1.0)
    assert strict.faces[0].above_threshold == ()


@pytest.mark.parametrize(
    "kwargs, message", [({"threshold": 1.5}, "between 0 and 1"), ({"backend": "cloud"}, "Unknown backend")]
)
def test_bad_arguments(tiny_model, kwargs, message):
    with pytest.raises(InputError, match=message):
        emotion.analyze(photo("codait_bryan.png"), model=str(tiny_model), **kwargs)


def test_env_sets_the_default_model(monkeypatch, tiny_model):
    monkeypatch.setenv("EMOTION_MODEL", str(tiny_model))
    assert Settings().model == str(tiny_model)
    assert emotion.analyze(photo("codait_bryan.png")).model == str(tiny_model)


def test_batch_classifies_all_faces_of_all_photos_in_one_forward(tiny_model, monkeypatch):
    from emotion.backends.local import LocalClassifier
    from emotion.pipeline import Pipeline

    batches, progress = [], []
    forward = LocalClassifier.forward
    monkeypatch.setattr(LocalClassifier, "forward", lambda self, x: batches.append(len(x)) or forward(self, x))
    photos = [
        photo("nasa_apollo11_crew.jpg"),
        photo("codait_bryan.png"),
        b"junk",
        photo("noface_pen.jpg"),
        photo("codait_bryan.png"),
    ]
    batch = Pipeline().analyze_many(
        photos, model=str(tiny_model), progress=lambda done, total: progress.append((done, total))
    )
    assert batches == [5]
    assert [len(r.faces) for _, r in batch.results] == [3, 1, 0, 1]
    assert [name for name, _ in batch.results][-1] == "codait_bryan.png (5)"  # same name, kept apart
    assert batch.errors[0][0] == "image 3" and "not an image" in batch.errors[0][1]
    assert progress[-1] == (5, 5)
    single = emotion.analyze(photo("nasa_apollo11_crew.jpg"), model=str(tiny_model))
    for a, b in zip(single.faces, batch.results[0][1].faces):
        assert a.box == b.box and all(abs(a.scores[k] - b.scores[k]) < 1e-4 for k in LABELS)


def test_uncertain_follows_the_settings(tiny_model):
    image = photo("nasa_apollo11_crew.jpg")
    faces = emotion.analyze(image, model=str(tiny_model)).faces
    top = max(face.confidence for face in faces)
    strict = Settings(uncertain_below=min(1.0, top + 1e-3), uncertain_margin=0.0)  # every face below the bar
    assert all(face.uncertain for face in emotion.analyze(image, model=str(tiny_model), settings=strict).faces)
    lenient = Settings(uncertain_below=0.0, uncertain_margin=0.0)
    assert not any(face.uncertain for face in emotion.analyze(image, model=str(tiny_model), settings=lenient).faces)
