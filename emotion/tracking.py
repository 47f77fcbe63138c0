"""Follow faces across frames (webcam or video) and smooth each one's probabilities.

Matching: every frame, the faces are assigned to the live tracks in one Hungarian assignment
(scipy's linear_sum_assignment) over a cost that mixes box overlap and centre distance. Overlap alone
fails when a small face moves more than its own width between two sampled frames; distance alone
confuses two faces side by side. A track that was not seen is looked for where its recent motion
would have taken it, and it survives ``max_missed`` frames without a match (a blink, a turned head,
a detector miss), so its id does not change when the face comes back.

Smoothing: each track keeps an exponential moving average of its seven probabilities, so a label
does not flicker from frame to frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from emotion.labels import LABELS
from emotion.pipeline import above
from emotion.results import Analysis

_FORBIDDEN = 1e6  # cost of a pair that may not be matched (linear_sum_assignment needs finite costs)


def iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _centre(box) -> tuple[float, float]:
    return (box[0] + box[2]) / 2, (box[1] + box[3]) / 2


def _side(box) -> float:
    """The side of a square with the box's area: the scale that distances are measured in."""
    return math.sqrt(max(1.0, (box[2] - box[0]) * (box[3] - box[1])))


@dataclass
class Track:
    """A tracker's internal state for one face (mutable; results leave as frozen Analysis/Face)."""

    id: int
    box: tuple
    probs: np.ndarray
    missed: int = 0  # frames since the face was last matched
    hits: int = 1  # frames the face was matched in
    velocity: tuple[float, float] = (0.0, 0.0)  # centre motion per frame, in pixels

    def predicted(self) -> tuple:
        """Where the box should be now: shifted by its motion over the frames since it was last seen."""
        steps = self.missed + 1
        dx, dy = self.velocity[0] * steps, self.velocity[1] * steps
        return (self.box[0] + dx, self.box[1] + dy, self.box[2] + dx, self.box[3] + dy)


class FaceTracker:
    def __init__(
        self,
        alpha: float = 0.4,
        min_iou: float = 0.3,
        max_missed: int = 5,
        threshold: float = 0.3,
        max_shift: float = 1.0,
        max_scale: float = 2.0,
    ):
        self.alpha = alpha  # weight of the newest frame in the moving average
        self.min_iou = min_iou  # a pair overlapping at least this much may match...
        self.max_shift = max_shift  # ... and so may one whose centres are at most this many face sides apart
        self.max_scale = max_scale  # but never two boxes whose sides differ by more than this factor
        self.max_missed = max_missed
        self.threshold = threshold
        self.tracks: list[Track] = []
        self._next_id = 1
        self._last: tuple[Analysis | None, tuple[int, ...]] = (None, ())

    def cost(self, track: Track, box) -> float:
        """Matching cost of a track and a detected box; _FORBIDDEN when they cannot be the same face."""
        guess = track.predicted()
        overlap = iou(guess, box)
        (gx, gy), (bx, by) = _centre(guess), _centre(box)
        side_t, side_b = _side(track.box), _side(box)
        shift = math.hypot(gx - bx, gy - by) / ((side_t + side_b) / 2)
        if max(side_t, side_b) / min(side_t, side_b) > self.max_scale:
            return _FORBIDDEN
        if overlap < self.min_iou and shift > self.max_shift:
            return _FORBIDDEN
        return (1.0 - overlap) + shift

    def step(self, result: Analysis) -> tuple[Analysis, tuple[int, ...]]:
        """The frame's analysis with each face's scores replaced by its track's smoothed scores,
        and the track id of each face (same order as ``result.faces``)."""
        from scipy.optimize import linear_sum_assignment

        faces = list(result.faces)
        costs = np.full((len(self.tracks), len(faces)), _FORBIDDEN)
        for ti, track in enumerate(self.tracks):
            for fi, face in enumerate(faces):
                costs[ti, fi] = self.cost(track, face.box)
        face_track: dict[int, Track] = {}
        # The assignment with the lowest total cost: one face per track, one track per face.
        for ti, fi in zip(*linear_sum_assignment(costs)):
            if costs[ti, fi] < _FORBIDDEN:
                face_track[fi] = self.tracks[ti]
        matched = {id(t) for t in face_track.values()}
        for track in self.tracks:
            if id(track) not in matched:
                track.missed += 1
        smoothed, ids = [], []
        for fi, face in enumerate(faces):
            probs = np.array([face.scores[k] for k in LABELS])
            track = face_track.get(fi)
            if track is None:
                track = Track(self._next_id, face.box, probs)
                self._next_id += 1
                self.tracks.append(track)
            else:
                self._follow(track, face.box)
                track.probs = self.alpha * probs + (1 - self.alpha) * track.probs
            scores = {k: float(p) for k, p in zip(LABELS, track.probs / track.probs.sum())}
            smoothed.append(replace(face, scores=scores, above_threshold=above(scores, self.threshold)))
            ids.append(track.id)
        self.tracks = [t for t in self.tracks if t.missed <= self.max_missed]
        out = replace(result, faces=tuple(smoothed))
        self._last = (out, tuple(ids))
        return out, tuple(ids)

    def update(self, result: Analysis) -> Analysis:
        """The frame's analysis with each face's scores replaced by its track's smoothed scores."""
        return self.step(result)[0]

    def ids(self, result: Analysis) -> list[int]:
        """Track id of each face of the last ``update`` result (same order); 0 for a face no track has."""
        last, ids = self._last
        if result is last:
            return list(ids)
        by_box = {t.box: t.id for t in self.tracks}
        return [by_box.get(f.box, 0) for f in result.faces]

    @staticmethod
    def _follow(track: Track, box) -> None:
        (ox, oy), (nx, ny) = _centre(track.box), _centre(box)
        steps = track.missed + 1
        seen = ((nx - ox) / steps, (ny - oy) / steps)
        # Half the newest motion, half the older: detector jitter does not throw the prediction off.
        track.velocity = seen if track.hits == 1 else tuple(0.5 * s + 0.5 * v for s, v in zip(seen, track.velocity))
        track.box, track.missed = box, 0
        track.hits += 1
