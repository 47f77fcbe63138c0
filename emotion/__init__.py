"""Facial emotion recognition: find every face in a photo and classify each into seven emotions.

    >>> import emotion
    >>> result = emotion.analyze("group.jpg")          # bundled model, offline
    >>> [(f.label, f.box) for f in result.faces]

Heavy modules (torch, transformers, MTCNN) load on first use, not at import.
"""

from emotion.labels import LABELS

__all__ = ["LABELS", "Analysis", "Face", "Pipeline", "Settings", "analyze"]


def __getattr__(name):
    if name in ("analyze", "Pipeline"):
        from emotion import pipeline

        return getattr(pipeline, name)
    if name in ("Analysis", "Face"):
        from emotion import results

        return getattr(results, name)
    if name == "Settings":
        from emotion.settings import Settings

        return Settings
    raise AttributeError(f"module 'emotion' has no attribute {name!r}")
