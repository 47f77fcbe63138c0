import pytest

from emotion.labels import LABELS
from emotion.results import Analysis, Face
from emotion.serving.track import FaceTracker, iou


def face(box, label: str, p: float = 0.9) -> Face:
    """A face scored ``label`` at p, the rest spread evenly."""
    rest = (1 - p) / (len(LABELS) - 1)
    return Face(tuple(box), 1.0, {k: (p if k == label else rest) for k in LABELS}, (label,))


def frame(*faces):
    return Analysis(tuple(faces), "m", "local", (640, 480))


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0


def test_smoothing_follows_each_face_and_damps_flicker():
    tracker = FaceTracker(alpha=0.4)
    out = tracker.update(frame(face((0, 0, 100, 100), "happy"), face((300, 0, 400, 100), "sad")))
    first_ids = tracker.ids(out)
    assert [f.label for f in out.faces] == ["happy", "sad"]
    # One noisy frame: the faces moved a little and the classifier flipped both labels.
    out = tracker.update(frame(face((5, 2, 105, 102), "angry"), face((303, 0, 402, 100), "neutral")))
    assert tracker.ids(out) == first_ids
    assert [f.label for f in out.faces] == ["happy", "sad"]
    assert out.faces[0].scores["happy"] == pytest.approx(0.6 * 0.9 + 0.4 * (0.1 / 6))
    # Persistent change wins after a few frames.
    for _ in range(3):
        out = tracker.update(frame(face((5, 2, 105, 102), "angry")))
    assert out.faces[0].label == "angry" and tracker.ids(out) == first_ids[:1]


def test_new_faces_get_new_ids_and_lost_tracks_expire():
    tracker = FaceTracker(max_missed=1)
    a = tracker.update(frame(face((0, 0, 50, 50), "happy")))
    b = tracker.update(frame(face((200, 200, 250, 250), "happy")))
    assert tracker.ids(a) != tracker.ids(b)
    tracker.update(frame())
    tracker.update(frame())
    assert len(tracker.tracks) == 0


def test_frames_that_waited_in_the_queue_are_dropped():
    from emotion.serving.track import LiveSession

    session = LiveSession(FaceTracker())
    assert not session.stale(10.0)  # nothing analysed yet
    session.done = 10.0
    assert session.stale(10.01) and session.dropped == 1  # dispatched right after the last frame finished
    assert not session.stale(10.3)  # a fresh frame after an idle moment
    assert session.tick(1.0) == 0.0 and session.tick(1.5) == pytest.approx(2.0)
