"""Facial emotion recognition: find every face in a photo and classify each into seven emotions.

    >>> import emotion
    >>> result = emotion.analyze("group.jpg")          # bundled model, offline
    >>> [(f.label, f.box) for f in result.faces]
    >>> video = emotion.analyze_video("clip.mp4")   # faces followed across frames
    >>> [(t.id, t.label, t.share) for t in video.tracks]

Heavy modules (torch, transformers, MTCNN) load on first use, not at import.
"""

from emotion.labels import LABELS

__all__ = ["LABELS", "Analysis", "Face", "Pipeline", "Settings", "VideoAnalysis", "analyze", "analyze_video"]


def __getattr__(name):
    if name in ("analyze", "Pipeline"):
        from emotion import pipeline

        return getattr(pipeline, name)
    if name in ("Analysis", "Face"):
        from emotion import results

        return getattr(results, name)
    if name in ("analyze_video", "VideoAnalysis", "VideoTrack", "TrackFrame"):
        from emotion import video

        return getattr(video, name)
    if name == "Settings":
        from emotion.settings import Settings

        return Settings
    raise AttributeError(f"module 'emotion' has no attribute {name!r}")
