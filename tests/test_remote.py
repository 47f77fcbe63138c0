"""The remote backend with the real huggingface_hub InferenceClient, talking to a stand-in Hub on loopback.

The Inference API cannot be reached from here, so a tiny HTTP server on 127.0.0.1 plays both parts the
client talks to: the Hub's model API (which inference provider serves a model) and the hf-inference
router (the classification itself). Every error the tests see is the one the real client raises for
that situation; nothing in the client is faked, only where it sends its requests.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from huggingface_hub import constants
from huggingface_hub.inference._providers import PROVIDERS, hf_inference
from huggingface_hub.inference._providers import _common as providers_common
from PIL import Image

import emotion
from emotion.backends.remote import RemoteClassifier
from emotion.errors import RemoteError
from emotion.settings import Settings
from tests.conftest import free_port, photo

TOKEN = "hf_secret_token_1234567890"

# What the stand-in inference router answers for each model: (HTTP status, JSON body).
SCORES = [{"label": "happiness", "score": 0.6}, {"label": "Sad", "score": 0.3}, {"label": "anger", "score": 0.1}]
ANSWERS = {
    "owner/model": (200, SCORES),
    "trpakov/vit-face-expression": (200, SCORES),
    "test/status-401": (401, {"error": "Invalid credentials in Authorization header"}),
    "test/status-403": (403, {"error": "This authentication method does not have sufficient permissions"}),
    "test/status-404": (404, {"error": "Model test/status-404 does not exist"}),
    "test/status-429": (429, {"error": "You have exceeded your monthly included credits"}),
    "test/status-503": (503, {"error": "Service Unavailable"}),
    "test/dict": (200, {"error": "oops"}),
    "test/not-emotions": (200, [{"label": "dog", "score": 0.9}]),
    "test/bad-score": (200, [{"label": "happy", "score": "high"}]),
    "test/empty": (200, []),
    "test/slow": (200, SCORES),  # answered only after the client's timeout
    "test/flaky": (200, SCORES),  # after the failures queued in FLAKY
}
FLAKY: list[tuple[int, object]] = []
# What the stand-in Hub says about each model's inference providers (absent: the hf-inference provider).
MAPPINGS = {
    "test/no-provider": None,  # the Hub's answer has no inferenceProviderMapping at all
    "test/empty-mapping": {},  # ... or an empty one
}
HUB_MISSING = {"test/not-on-hub"}  # the Hub answers 404 for these


class StandIn(BaseHTTPRequestHandler):
    """Serves GET /api/models/<id> (the Hub) and POST /hf-inference/models/<id> (the inference router)."""

    requests: list[dict]  # set on the subclass made per server
    release: threading.Event

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _send(self, status: int, body, headers: dict | None = None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?")[0]
        if not path.startswith("/api/models/"):
            return self._send(404, {"error": "not found"})
        model = path.removeprefix("/api/models/")
        if model in HUB_MISSING:
            return self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
        info = {"id": model, "pipeline_tag": "image-classification", "tags": []}
        if "expand=inferenceProviderMapping" in self.path:
            default = {"hf-inference": {"status": "live", "providerId": model, "task": "image-classification"}}
            mapping = MAPPINGS.get(model, default)
            info = {"id": model}
            if mapping is not None:
                info["inferenceProviderMapping"] = mapping
        self._send(200, info)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        model = self.path.removeprefix("/hf-inference/models/")
        payload = json.loads(body) if self.headers.get("Content-Type", "").startswith("application/json") else {}
        type(self).requests.append(
            {
                "model": model,
                "authorization": self.headers.get("Authorization"),
                "top_k": payload.get("parameters", {}).get("top_k"),
                "image": base64.b64decode(payload["inputs"]) if "inputs" in payload else body,
            }
        )
        if model == "test/slow":
            type(self).release.wait(10)
        if model == "test/flaky" and FLAKY:
            status, answer = FLAKY.pop(0)
        else:
            status, answer = ANSWERS.get(model, (404, {"error": f"Model {model} does not exist"}))
        self._send(status, answer)


def _clear_hub_caches():
    providers_common._fetch_inference_provider_mapping.cache_clear()
    hf_inference._check_supported_task.cache_clear()


@pytest.fixture
def hub(monkeypatch):
    """The stand-in Hub and router on a free loopback port; the real client is pointed at it.

    Yields the list of classification requests it received.
    """
    handler = type("Handler", (StandIn,), {"requests": [], "release": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    # conftest sets HF_HUB_OFFLINE=1, which blocks every request the client makes, loopback included.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", url)  # HfApi() reads it when created: provider mapping
    # The hf-inference helper took the router's address when huggingface_hub was imported.
    monkeypatch.setattr(PROVIDERS["hf-inference"]["image-classification"], "base_url", f"{url}/hf-inference")
    _clear_hub_caches()
    yield handler.requests
    handler.release.set()
    server.shutdown()
    server.server_close()
    _clear_hub_caches()


def crops(n=3):
    return [Image.new("RGB", (40, 40), (i * 40, 0, 0)) for i in range(n)]


def test_scores_are_mapped_and_normalised(hub):
    faces = crops()
    probs = RemoteClassifier("owner/model", token=TOKEN)(faces)
    assert probs.shape == (3, 7)
    np.testing.assert_allclose(probs[0], [0.1, 0, 0, 0.6, 0.3, 0, 0])
    assert len(hub) == 3
    assert all(r["model"] == "owner/model" and r["authorization"] == f"Bearer {TOKEN}" for r in hub)
    assert all(r["top_k"] == 7 for r in hub)
    # Each face crop is sent once, as the PNG of that crop.
    sent = sorted(np.asarray(Image.open(io.BytesIO(r["image"]))).tobytes() for r in hub)
    assert sent == sorted(np.asarray(f).tobytes() for f in faces)


def test_token_from_environment_when_local(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    emotion.analyze(photo("codait_bryan.png"), backend="remote", model="owner/model", settings=Settings(public=False))
    assert hub[0]["authorization"] == f"Bearer {TOKEN}"


def test_public_mode_never_spends_the_owners_token_unless_shared(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    public = Settings(public=True, allowed_models=("owner/model",))
    with pytest.raises(RemoteError, match="needs a Hugging Face access token"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="owner/model", settings=public)
    assert hub == []
    visitor = "hf_visitor_token_000"
    emotion.analyze(photo("codait_bryan.png"), backend="remote", model="owner/model", token=visitor, settings=public)
    assert [r["authorization"] for r in hub] == [f"Bearer {visitor}"]
    shared = Settings(public=True, allowed_models=("owner/model",), share_token=True)
    emotion.analyze(photo("codait_bryan.png"), backend="remote", model="owner/model", settings=shared)
    assert hub[-1]["authorization"] == f"Bearer {TOKEN}"
    with pytest.raises(emotion.errors.InputError, match="only the models in its list"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="someone/else", settings=shared)
    assert len(hub) == 2


def test_busy_service_is_retried_with_backoff(hub):
    """A 503 then a 429 then an answer: the client waits and retries (huggingface_hub's http_backoff)."""
    FLAKY[:] = [(503, {"error": "loading"}), (429, {"error": "slow down"})]
    probs = RemoteClassifier("test/flaky", token=TOKEN, retries=2)(crops(1))
    assert probs.shape == (1, 7) and len(hub) == 3 and FLAKY == []
    FLAKY[:] = [(503, {"error": "loading"})] * 3
    with pytest.raises(RemoteError, match="failed on its side"):
        RemoteClassifier("test/flaky", token=TOKEN, retries=1)(crops(1))
    assert len(hub) == 5


def test_whole_pipeline_through_remote(hub, caplog):
    caplog.set_level("DEBUG")
    result = emotion.analyze(
        photo("nasa_apollo11_crew.jpg"), backend="remote", model="trpakov/vit-face-expression", token=TOKEN
    )
    assert result.backend == "remote" and result.model == "trpakov/vit-face-expression"
    assert [f.label for f in result.faces] == ["happy"] * 3
    assert result.faces[0].above_threshold == ("happy", "sad")
    assert len(hub) == 3 and {r["model"] for r in hub} == {"trpakov/vit-face-expression"}
    assert TOKEN not in caplog.text and TOKEN not in str(result.to_dict())


@pytest.mark.parametrize(
    "model, message",
    [
        ("test/status-401", "token was rejected"),
        ("test/status-403", "permission"),
        ("test/status-404", "does not know the model"),
        ("test/not-on-hub", "does not know the model"),
        ("test/status-429", "rate limit"),
        ("test/status-503", "failed on its side"),
        ("test/no-provider", "No Inference Provider serves"),
        ("test/empty-mapping", "No Inference Provider serves"),
        ("test/not-emotions", "not a list of emotion labels"),
        ("test/bad-score", "not a list of emotion labels"),
        ("test/empty", "not a list of emotion labels"),
        ("test/dict", "not a list of emotion labels"),
    ],
    ids=lambda v: v.removeprefix("test/") if v.startswith("test/") else None,
)
def test_each_failure_has_its_own_message_without_the_token(hub, model, message):
    with pytest.raises(RemoteError, match=message) as info:
        RemoteClassifier(model, token=TOKEN)(crops(2))
    assert TOKEN not in str(info.value) and info.value.__cause__ is None


def test_timeout_has_its_own_message(hub):
    """The real client turns httpx2's read timeout into InferenceTimeoutError."""
    with pytest.raises(RemoteError, match="did not answer in time") as info:
        RemoteClassifier("test/slow", token=TOKEN, timeout=0.5)(crops(1))
    assert TOKEN not in str(info.value) and info.value.__cause__ is None


def test_offline_mode_has_its_own_message(hub, monkeypatch):
    """With HF_HUB_OFFLINE set the real client raises OfflineModeIsEnabled (a ConnectionError)."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(RemoteError, match="Could not reach") as info:
        RemoteClassifier("owner/model", token=TOKEN)(crops(1))
    assert TOKEN not in str(info.value) and info.value.__cause__ is None
    assert hub == []


def test_unreachable_hub_has_its_own_message(hub, monkeypatch):
    """No network (or DNS failure, or nothing listening): the real client raises httpx2.ConnectError."""
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(RemoteError, match="Could not reach") as info:
        RemoteClassifier("owner/model", token=TOKEN)(crops(1))
    assert TOKEN not in str(info.value) and info.value.__cause__ is None


def test_no_token():
    with pytest.raises(RemoteError, match="needs a Hugging Face access token"):
        RemoteClassifier("owner/model")


def test_no_silent_fallback_and_local_unaffected(hub, tiny_model):
    with pytest.raises(RemoteError, match="token was rejected"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="test/status-401", token=TOKEN)
    assert len(hub) == 1
    local = emotion.analyze(photo("codait_bryan.png"), model=str(tiny_model))
    assert local.backend == "local" and len(local.faces) == 1


def test_remote_model_must_be_a_hub_id(hub):
    with pytest.raises(emotion.errors.InputError, match="not a Hugging Face model id"):
        emotion.analyze(photo("codait_bryan.png"), backend="remote", model="../../etc/passwd", token=TOKEN)
    assert hub == []


def test_bundled_model_goes_remote_as_the_default_hub_model(hub):
    settings = Settings(remote_model="owner/model")
    result = emotion.analyze(
        photo("codait_bryan.png"), backend="remote", model="bundled", token=TOKEN, settings=settings
    )
    assert result.model == "owner/model" and [r["model"] for r in hub] == ["owner/model"]
