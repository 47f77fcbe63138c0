"""Live video: follow faces across frames by box overlap and smooth their probabilities.

Each track keeps an exponential moving average of its seven probabilities, so a label
does not flicker from frame to frame; a track unseen for a few frames is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from emotion.labels import LABELS
from emotion.pipeline import above
from emotion.results import Analysis


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class Track:
    id: int
    box: tuple
    probs: np.ndarray
    missed: int = 0


class FaceTracker:
    def __init__(self, alpha: float = 0.4, min_iou: float = 0.3, max_missed: int = 5, threshold: float = 0.3):
        self.alpha = alpha  # weight of the newest frame in the moving average
        self.min_iou = min_iou
        self.max_missed = max_missed
        self.threshold = threshold
        self.tracks: list[Track] = []
        self._next_id = 1

    def update(self, result: Analysis) -> Analysis:
        """The frame's analysis with each face's scores replaced by its track's smoothed scores."""
        from scipy.optimize import linear_sum_assignment

        faces = list(result.faces)
        overlap = np.zeros((len(self.tracks), len(faces)))
        for ti, track in enumerate(self.tracks):
            for fi, face in enumerate(faces):
                overlap[ti, fi] = iou(track.box, face.box)
        matched_tracks, face_track = set(), {}
        # The assignment with the largest total overlap; pairs that barely overlap stay apart.
        for ti, fi in zip(*linear_sum_assignment(overlap, maximize=True)):
            if overlap[ti, fi] >= self.min_iou:
                matched_tracks.add(ti)
                face_track[fi] = self.tracks[ti]
        for ti, track in enumerate(self.tracks):
            if ti not in matched_tracks:
                track.missed += 1
        smoothed = []
        for fi, face in enumerate(faces):
            probs = np.array([face.scores[k] for k in LABELS])
            track = face_track.get(fi)
            if track is None:
                track = Track(self._next_id, face.box, probs)
                self._next_id += 1
                self.tracks.append(track)
            else:
                track.probs = self.alpha * probs + (1 - self.alpha) * track.probs
                track.box, track.missed = face.box, 0
            scores = {k: float(p) for k, p in zip(LABELS, track.probs / track.probs.sum())}
            smoothed.append(replace(face, scores=scores, above_threshold=above(scores, self.threshold)))
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        return replace(result, faces=tuple(smoothed))

    def ids(self, result: Analysis) -> list[int]:
        """Track id of each face of the last ``update`` result (same order)."""
        by_box = {t.box: t.id for t in self.tracks}
        return [by_box.get(f.box, 0) for f in result.faces]


@dataclass
class LiveSession:
    """Per-viewer state of the live tab: the tracker and a smoothed frame rate."""

    tracker: FaceTracker
    last: float = 0.0
    fps: float = 0.0
    done: float = 0.0  # when the last analysed frame finished
    dropped: int = 0

    def stale(self, now: float, gap_s: float = 0.05) -> bool:
        """A frame that starts right after the previous one finished waited in the queue meanwhile:
        it is dropped so the next, fresher frame is analysed instead (work per frame stays bounded)."""
        if self.done and now - self.done < gap_s:
            self.dropped += 1
            return True
        return False

    def tick(self, now: float) -> float:
        if self.last:
            rate = 1.0 / max(1e-6, now - self.last)
            self.fps = rate if not self.fps else 0.7 * self.fps + 0.3 * rate
        self.last = now
        return self.fps
