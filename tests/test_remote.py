"""The remote backend, with a fake InferenceClient: the Inference API cannot be reached from here."""

import httpx2
import numpy as np
import pytest
from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError
from huggingface_hub.inference._generated.types import ImageClassificationOutputElement as Element
from PIL import Image

import emotion
from emotion.errors import RemoteError
from emotion.remote import RemoteClassifier
from tests.conftest import photo

TOKEN = "hf_secret_token_1234567890"


class FakeClient:
    """Stands in for huggingface_hub.InferenceClient; ``answer`` is returned or raised."""

    answer = None
    calls = []

    def __init__(self, model=None, token=None, timeout=None):
        self.model, self.token, self.timeout = model, token, timeout

    def image_classification(self, image, top_k=None):
        FakeClient.calls.append((self.model, self.token, len(image), top_k))
        if isinstance(FakeClient.answer, BaseException):
            raise FakeClient.answer
        return FakeClient.answer


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr("emotion.remote.InferenceClient", FakeClient)
    FakeClient.calls = []
    FakeClient.answer = [
        Element(label="happiness", score=0.6),
        Element(label="Sad", score=0.3),
        Element(label="anger", score=0.1),
    ]
    return FakeClient


def http_error(status: int) -> HfHubHTTPError:
    request = httpx2.Request("POST", "https://router.huggingface.co/hf-inference/models/x")
    return HfHubHTTPError(f"{status} error", response=httpx2.Response(status, request=request))


def crops(n=3):
    return [Image.new("RGB", (40, 40), (i * 40, 0, 0)) for i in range(n)]


def test_scores_are_mapped_and_normalised(fake):
    probs = RemoteClassifier("owner/model", token=TOKEN)(crops())
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs[0], [0.1, 0, 0, 0.6, 0.3, 0, 0])
    assert len(fake.calls) == 3 and all(c[0] == "owner/model" and c[1] == TOKEN and c[3] == 7 for c in fake.calls)


def test_token_from_environment(fake, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    RemoteClassifier("owner/model")(crops(1))
    assert fake.calls[0][1] == TOKEN


def test_whole_pipeline_through_remote(fake, caplog):
    caplog.set_level("DEBUG")
    result = emotion.analyze(
        photo("nasa_apollo11_crew.jpg"), backend="remote", model="trpakov/vit-face-expression", token=TOKEN
    )
    assert result.backend == "remote" and result.model == "trpakov/vit-face-expression"
    assert [f.label for f in result.faces] == ["happy"] * 3
    assert result.faces[0].above_threshold == ("happy", "sad")
    assert TOKEN not in caplog.text and TOKEN not in str(result.to_dict())


@pytest.mark.parametrize(
    "answer, message",
    [
        (http_error(401), "token was rejected"),
        (http_error(403), "permission"),
        (http_error(404), "does not know the model"),
        (http_error(429), "rate limit"),
        (http_error(503), "failed on its side"),
        (InferenceTimeoutError("timed out"), "did not answer in time"),
        (ValueError("No provider mapping found for model owner/model"), "No Inference Provider serves"),
        (StopIteration(), "No Inference Provider serves"),
        (ConnectionError("Name or service not known"), "Could not reach"),
        ({"error": "oops"}, "not a list of emotion labels"),
        ([Element(label="dog", score=0.9)], "not a list of emotion labels"),
        ([{"label": "happy", "score": "high"}], "not a list of emotion labels"),
        ([], "not a list of emotion labels"),
    ],
    ids=[
        "401",
        "403",
        "no-provider-404",
        "429",
        "503",
        "timeout",
        "no-provider",
        "empty-mapping",
        "offline",
        "dict",
        "not-emotions",
        "bad-score",
        "empty",
    ],
)
def test_each_failure_has_its_own_message_without_the_token(fake, answer, message):
    fake.answer = answer
    with pytest.raises(RemoteError, match=message) as info:
        RemoteClassifier("owner/model", token=TOKEN)(crops(2))
    assert TOKEN not in str(info.value) and info.value.__cause__ is None


def test_no_token():
    with pytest.raises(RemoteError, match="needs a Hugging Face access token"):
        RemoteClassifier("owner/model")


def test_no_silent_fallback_and_local_unaffected(fake, tiny_model):
    fake.answer = http_error(401)
    with pytest.raises(RemoteError):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="owner/model", token=TOKEN)
    local = emotion.analyze(photo("codait_bryan.png"), model=str(tiny_model))
    assert local.backend == "local" and len(local.faces) == 1


def test_remote_model_must_be_a_hub_id(fake):
    with pytest.raises(emotion.errors.InputError, match="not a Hugging Face model id"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="../../etc/passwd", token=TOKEN)
    assert fake.calls == []


def test_bundled_model_is_local_only(fake):
    with pytest.raises(emotion.errors.InputError, match="runs only locally"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="bundled", token=TOKEN)
