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


def test_the_tracker_lives_in_the_core_and_the_app_names_still_import():
    from emotion import tracking
    from emotion.serving import track

    assert track.FaceTracker is tracking.FaceTracker and track.iou is tracking.iou
    assert track.LiveSession(track.FaceTracker(threshold=0.5)).tracker.threshold == 0.5


def test_a_small_fast_face_is_matched_by_its_centre_when_boxes_no_longer_overlap():
    tracker = FaceTracker()
    _, first = tracker.step(frame(face((0, 0, 40, 40), "happy")))
    _, then = tracker.step(frame(face((30, 0, 70, 40), "happy")))  # IoU 0.14: overlap alone would lose it
    assert then == first
    _, far = tracker.step(frame(face((300, 0, 340, 40), "happy")))  # 6 face sides away: someone else
    assert far != first


def test_the_motion_carries_a_track_over_missed_frames():
    tracker = FaceTracker(max_missed=3)
    ids = [tracker.step(frame(face((x, 0, x + 40, 40), "happy")))[1] for x in (0, 30, 60)]
    assert ids[0] == ids[1] == ids[2]
    tracker.step(frame())  # two frames without a detection (a blink, a turned head)...
    tracker.step(frame())
    # ... and the face is back where its motion took it: 150 px on, far from where it was last seen.
    assert tracker.step(frame(face((150, 0, 190, 40), "happy")))[1] == ids[0]
    assert len(tracker.tracks) == 1


def test_one_to_one_assignment_keeps_neighbours_apart():
    tracker = FaceTracker()
    _, ids = tracker.step(frame(face((0, 0, 50, 50), "happy"), face((55, 0, 105, 50), "sad")))
    # Both moved right by 20 px: greedy nearest-box matching could give the right face's track to the left one.
    out, moved = tracker.step(frame(face((20, 0, 70, 50), "happy"), face((75, 0, 125, 50), "sad")))
    assert moved == ids and [f.label for f in out.faces] == ["happy", "sad"]


def test_a_box_of_a_very_different_size_is_a_new_face():
    tracker = FaceTracker()
    _, small = tracker.step(frame(face((100, 100, 130, 130), "happy")))
    _, big = tracker.step(frame(face((60, 60, 180, 180), "happy")))  # same centre, four times the side
    assert big != small
