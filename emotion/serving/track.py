"""Live video (the webcam tab): per-viewer state around the core tracker.

The tracker itself lives in emotion.tracking (the video analysis uses it too); its names stay
importable from here for the app.
"""

from __future__ import annotations

from dataclasses import dataclass

from emotion.tracking import FaceTracker, Track, iou

__all__ = ["FaceTracker", "LiveSession", "Track", "iou"]


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
