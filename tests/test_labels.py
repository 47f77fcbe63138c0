import pytest

from emotion.errors import ModelError
from emotion.labels import LABELS, canonical, label_mapping


@pytest.mark.parametrize(
    "name, expected",
    [
        ("anger", "angry"),
        ("Happiness", "happy"),
        ("Sad", "sad"),
        ("SURPRISED", "surprise"),
        ("fearful", "fear"),
        ("neutral", "neutral"),
        ("disgusted", "disgust"),
        ("contempt", None),
        ("LABEL_0", None),
    ],
)
def test_canonical_names(name, expected):
    assert canonical(name) == expected


def test_dima806_order_maps_onto_canonical_indices():
    dima = {0: "sad", 1: "disgust", 2: "angry", 3: "neutral", 4: "fear", 5: "surprise", 6: "happy"}
    assert label_mapping(dima) == [4, 1, 0, 6, 2, 5, 3]
    assert [LABELS[i] for i in label_mapping(dima)] == list(dima.values())


def test_string_keys_from_json_configs_are_sorted_numerically():
    id2label = {str(i): name for i, name in enumerate(LABELS)}
    assert label_mapping(id2label) == list(range(7))


@pytest.mark.parametrize(
    "id2label, fragment",
    [
        ({i: f"LABEL_{i}" for i in range(7)}, "unknown label"),
        ({**{i: n for i, n in enumerate(LABELS[:6])}, 6: "contempt"}, "contempt"),
        ({i: n for i, n in enumerate(LABELS[:6])}, "missing: ['neutral']"),
        ({**{i: n for i, n in enumerate(LABELS)}, 7: "joy"}, "twice"),
    ],
)
def test_unmappable_models_are_refused_with_a_reason(id2label, fragment):
    with pytest.raises(ModelError, match="cannot be mapped|do not cover") as info:
        label_mapping(id2label)
    assert fragment in str(info.value)
