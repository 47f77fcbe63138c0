"""The seven canonical emotion labels and the one place where model label names are normalised."""

from __future__ import annotations

from collections.abc import Mapping

from emotion.errors import ModelError

# FER-2013's own order; every result in the package uses these names.
LABELS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Spellings seen on the hub (and in FER+), lower-cased, mapped to the canonical name.
_ALIASES = {
    "anger": "angry",
    "angry": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "scared": "fear",
    "afraid": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
}


def canonical(name: str) -> str | None:
    """Canonical label for a model's label name, or None if it is not one of the seven."""
    key = str(name).strip().lower().replace("_", " ").replace("-", " ")
    # Hub models sometimes prefix an index ("0 angry") or use "LABEL_0"-style junk.
    key = key.split()[-1] if key else key
    return _ALIASES.get(key)


def label_mapping(id2label: Mapping[int, str]) -> list[int]:
    """For each model output index, the index into LABELS it maps to.

    Raises ModelError unless the model's labels are exactly the seven emotions,
    in any order and spelling.
    """
    by_index = {int(k): v for k, v in id2label.items()}  # JSON configs have string keys
    names = [by_index[i] for i in sorted(by_index)]
    mapped = [canonical(n) for n in names]
    unknown = [n for n, m in zip(names, mapped) if m is None]
    if unknown:
        raise ModelError(
            f"The model's labels {names} cannot be mapped onto the seven emotions "
            f"{list(LABELS)}: unknown label(s) {unknown}."
        )
    if sorted(mapped) != sorted(LABELS):
        missing = sorted(set(LABELS) - set(mapped))
        raise ModelError(
            f"The model's labels {names} do not cover the seven emotions once each"
            + (f" (missing: {missing})." if missing else " (a label appears twice).")
        )
    return [LABELS.index(m) for m in mapped]
