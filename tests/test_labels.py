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
    # Ids where string order ("10" < "11" < "2" < ...) and numeric order differ, given as JSON configs
    # write them (string keys) and in neither order: only sorting by numeric id gives the right mapping.
    ids = [2, 3, 5, 7, 10, 11, 13]
    names = ["neutral", "happy", "sad", "fear", "angry", "surprise", "disgust"]
    id2label = {str(i): n for i, n in sorted(zip(ids, names), key=lambda pair: str(pair[1]))}
    expected = [LABELS.index(n) for n in names]
    assert label_mapping(id2label) == expected == [6, 3, 4, 2, 0, 5, 1]
    # The same labels with int keys, as transformers' config objects hold them.
    assert label_mapping({i: n for i, n in zip(ids, names)}) == expected
    # String order would have put ids 10, 11, 13 first.
    assert label_mapping(dict(sorted(id2label.items()))) == expected


def test_labels_of_a_model_with_ten_or_more_outputs_are_read_in_numeric_order():
    # A FER+-style head with 12 outputs is refused; the message lists its labels by numeric id.
    names = [*LABELS, "contempt", "unknown", "not_face", "other", "extra"]
    id2label = {str(i): n for i, n in reversed(list(enumerate(names)))}
    with pytest.raises(ModelError) as info:
        label_mapping(id2label)
    assert str(names) in str(info.value)
    assert "unknown label(s) ['contempt', 'unknown', 'not_face', 'other', 'extra']" in str(info.value)


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
