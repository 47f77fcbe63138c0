"""A public Space under attack: each attack of issue 12, sent as any visitor could, against the real server.

Raw HTTP where the attack needs it (paths without Gradio's ``meta``, data: URLs, oversized bodies);
gradio_client elsewhere; a loopback stand-in for the Hub (HF_ENDPOINT's address) where a download, or
its absence, must be observed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import random
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file
from huggingface_hub import constants
from PIL import Image

from emotion.policy import PUBLIC_REFUSAL
from emotion.serving.uploads import NOT_UPLOADED
from tests.conftest import free_port, launch_app, photo

OWNER_TOKEN = "hf_owner_secret_0123456789"


@pytest.fixture(scope="module")
def hub_requests():
    """A stand-in Hub on loopback that knows no repository; it records what reaches it (``.url``: where)."""
    seen = Recorded()

    class Hub(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            seen.append({"path": self.path, "authorization": self.headers.get("Authorization")})
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_GET = do_HEAD = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    seen.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield seen
    server.shutdown()


class Recorded(list):
    url = ""


@pytest.fixture(scope="module")
def public(tiny_model):
    """The app in public mode with small limits, so each attack is cheap to send."""
    from emotion.settings import Settings

    settings = Settings(
        model=str(tiny_model),
        public=True,
        allowed_models=("owner/allowed",),
        max_upload_mb=1,
        max_image_pixels=2_000_000,
        max_batch_photos=3,
        max_batch_pixels=1_000_000,
        max_request_mb=2,
        detect_max_candidates=40,
        max_faces=8,
    )
    demo, url = launch_app(settings)
    yield url
    demo.close()


def upload(url: str, path: Path) -> dict:
    with open(path, "rb") as f:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, f)}, timeout=30)
    response.raise_for_status()
    return {"path": response.json()[0], "meta": {"_type": "gradio.FileData"}, "orig_name": path.name}


def call(url: str, api: str, data: list) -> tuple[str, dict | list | None]:
    """One raw API call: ("complete", outputs) or ("error", {"error": message...})."""
    response = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30)
    response.raise_for_status()
    stream = httpx.get(f"{url}gradio_api/call/{api}/{response.json()['event_id']}", timeout=120).text
    event = data_line = None
    for line in stream.splitlines():
        if line.startswith("event:"):
            event = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data_line = line.split(":", 1)[1].strip()
    return event, json.loads(data_line) if data_line else None


def refused(url: str, api: str, data: list) -> str:
    event, payload = call(url, api, data)
    assert event == "error", (event, str(payload)[:300])
    message = (payload or {}).get("error")
    assert message, "a generic error without a message"
    return message


def options(model="", threshold=0.3, token=None, explain=False, backend="local"):
    return [backend, model, threshold, token, explain]


# 1. Server files read --------------------------------------------------------------------------------------


def test_a_server_path_is_never_opened(public, tmp_path):
    secret = tmp_path / "server_secret.jpg"
    shutil.copy(photo("nasa_apollo11_crew.jpg"), secret)
    assert refused(public, "analyze", [{"path": str(secret)}, *options()]) == NOT_UPLOADED
    # With Gradio's meta, Gradio's own check refuses it (with its generic error).
    event, _ = call(public, "analyze", [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}, *options()])
    assert event == "error"
    for files in ([{"path": str(secret)}], [{"path": str(secret), "meta": {"_type": "gradio.FileData"}}]):
        event, _ = call(public, "analyze_batch", [files, *options()[:4]])  # refused by Gradio's own checks
        assert event == "error"
    # A real upload of the same file works.
    event, outputs = call(public, "analyze", [upload(public, secret), *options()])
    assert event == "complete" and len(outputs[-1]["faces"]) == 3


# 2 and 7. Visitor-chosen models, and the model box as a file-system probe -------------------------------------


def test_public_mode_refuses_typed_models_and_folders_before_any_lookup(public, tmp_path, tiny_model, monkeypatch):
    import emotion.backends.local as local

    looked_up = []  # every name that reached the model loader (a folder check or a Hub download)
    real_resolve = local.resolve
    monkeypatch.setattr(local, "resolve", lambda name: looked_up.append(name) or real_resolve(name))
    face = upload(public, photo("codait_bryan.png"))
    folder_with_model = tmp_path / "copy"
    shutil.copytree(tiny_model, folder_with_model)
    config = upload(public, Path(tiny_model) / "config.json")
    probes = [
        "someone/private-model",
        "Owner/Other",
        "/root",
        "/nonexistent",
        "~root",
        "~nosuchuser",
        str(folder_with_model),
        str(Path(config["path"]).parent),
    ]
    messages = {refused(public, "analyze", [face, *options(model=m)]) for m in probes}
    assert messages == {PUBLIC_REFUSAL}, "one message, which tells nothing about the server"
    assert looked_up == [], "nothing was looked up: no folder, no Hub"
    call(public, "analyze", [face, *options(model="owner/allowed")])  # the spy does see what passes
    assert looked_up == ["owner/allowed"]


DOWNLOAD = """
import sys
from emotion.backends.local import LocalClassifier
from emotion.errors import ModelError
from emotion.settings import Settings
settings = Settings(public=sys.argv[1] == "public", allowed_models=("owner/allowed",))
for attempt in range(int(sys.argv[2])):
    try:
        LocalClassifier("OWNER/allowed", "cpu", settings=settings)
    except ModelError as exc:
        assert "Could not load the model" in str(exc) and "TOKEN" not in str(exc), exc
"""


@pytest.mark.parametrize("mode", ["public", "local"])
def test_downloads_carry_the_owners_token_only_locally_and_failures_are_remembered(hub_requests, mode):
    """A fresh interpreter pointed at the stand-in Hub by HF_ENDPOINT (read when huggingface_hub loads)."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "HF_ENDPOINT": hub_requests.url, "HF_HUB_OFFLINE": "0", "HF_TOKEN": OWNER_TOKEN}
    env["HF_HOME"] = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"hf-home-{mode}-{os.getpid()}")
    code = DOWNLOAD.replace("TOKEN", OWNER_TOKEN)
    counts = []
    for attempts in ("1", "2"):
        before = len(hub_requests)
        done = subprocess.run(
            [sys.executable, "-c", code, mode, attempts], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-2000:]
        tried = hub_requests[before:]
        assert tried, "the allow-listed model was looked up on the (stand-in) Hub"
        expected = None if mode == "public" else f"Bearer {OWNER_TOKEN}"
        assert all(r["authorization"] == expected for r in tried), tried
        counts.append(len(tried))
    assert counts[0] == counts[1], f"the second attempt went to the Hub again: {counts}"


def test_public_model_box_offers_only_the_list(public):
    config = httpx.get(f"{public}config", timeout=10).json()
    boxes = [c["props"] for c in config["components"] if c["props"].get("label") == "Model"]
    assert boxes and boxes[0]["allow_custom_value"] is False
    offered = [value for _, value in boxes[0]["choices"]]
    assert "bundled" in offered and "owner/allowed" in offered
    assert "trpakov/vit-face-expression" not in offered


# 3. /analyze_batch caps ------------------------------------------------------------------------------------


def test_batch_is_capped_in_photos_and_in_pixels(public, tmp_path):
    small = upload(public, photo("codait_bryan.png"))
    message = refused(public, "analyze_batch", [[small] * 4, *options()[:4]])
    assert "too many" in message and "3" in message
    big = tmp_path / "big.png"
    Image.new("RGB", (1200, 700), (200, 180, 160)).save(big)  # 0.84 MP each, tiny on disk
    message = refused(public, "analyze_batch", [[upload(public, big), upload(public, big)], *options()[:4]])
    assert "MP" in message and "limit" in message
    event, outputs = call(public, "analyze_batch", [[upload(public, big)], *options()[:4]])
    assert event == "complete"


# 4. data: URLs ---------------------------------------------------------------------------------------------


def data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_data_urls_are_checked_before_decoding(public):
    bomb = data_url(Image.new("L", (4000, 4000)))  # 16 MP in a few kB
    assert len(bomb) < 100_000
    message = refused(public, "analyze", [{"path": None, "url": bomb}, *options()])
    assert "MP" in message and "limit" in message
    heavy = "data:image/png;base64," + "A" * 1_450_000  # 1.04 MB once decoded, over the 1 MB upload limit
    assert "limit" in refused(public, "analyze", [{"path": None, "url": heavy}, *options()])
    face = data_url(Image.open(photo("codait_bryan.png")))
    event, outputs = call(public, "analyze", [{"path": None, "url": face}, *options()])
    assert event == "complete" and len(outputs[-1]["faces"]) == 1


# 5. Disk ---------------------------------------------------------------------------------------------------


def test_upload_requests_are_capped_before_anything_is_stored(public):
    from emotion.serving.uploads import upload_folder

    def stored():
        return sum(1 for p in upload_folder().rglob("*") if p.is_file())

    before = stored()
    files = [("files", (f"f{i}.jpg", os.urandom(900_000))) for i in range(5)]  # 4.5 MB in one request
    response = httpx.post(f"{public}gradio_api/upload", files=files, timeout=30)
    assert response.status_code == 413 and "limit" in response.text
    assert stored() == before


# 6. Hundreds of tiny faces ---------------------------------------------------------------------------------


def test_many_tiny_faces_stay_within_the_detection_budget(public, tmp_path):
    from emotion.detectors import get_detector
    from emotion.settings import Settings

    face = Image.open(photo("codait_bryan.png")).convert("RGB")
    w, h = face.size
    tile = face.crop((w // 4, h // 8, 3 * w // 4, 7 * h // 8)).resize((36, 44))
    canvas = Image.new("RGB", (36 * 25, 44 * 20), (128, 128, 128))
    for i in range(25):
        for j in range(20):
            canvas.paste(tile, (i * 36, j * 44))  # 500 faces
    crowd = tmp_path / "crowd.png"
    canvas.save(crowd)
    # The detector the app's pipeline uses: the registry builds one per detection settings.
    detector = get_detector("mtcnn", Settings(detect_max_candidates=40))
    sizes: list[int] = []
    hooks = [
        net.register_forward_hook(lambda module, inputs, output: sizes.append(len(inputs[0])))
        for nets in detector.networks
        for net in (nets.rnet, nets.onet)
    ]
    try:
        event, outputs = call(public, "analyze", [upload(public, crowd), *options()])
    finally:
        for hook in hooks:
            hook.remove()
    assert event == "complete"
    doc = outputs[-1]
    assert len(doc["faces"]) == 8 and doc["faces_dropped"] > 0, "the face cap still applies"
    assert sizes and max(sizes) <= 40, f"stage batches {sizes} exceed the candidate budget"


# 8 and 9. Every failure is a message; strict types -----------------------------------------------------------


def fuzzed(kind: str, count: int, seed: int = 0) -> list[bytes]:
    buffer = io.BytesIO()
    Image.open(photo("codait_bryan.png")).convert("RGB").resize((64, 64)).save(buffer, kind)
    good, rng, out = buffer.getvalue(), random.Random(seed), []
    for _ in range(count):
        data = bytearray(good)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        out.append(bytes(data[: rng.randint(len(data) // 2, len(data))]) if rng.random() < 0.3 else bytes(data))
    return out


@pytest.mark.parametrize("kind", ["QOI", "AVIF"])
def test_fuzzed_images_are_a_message_alone_and_in_a_batch(public, tmp_path, kind):
    good = upload(public, photo("codait_bryan.png"))
    for i, data in enumerate(fuzzed(kind, 6)):
        path = tmp_path / f"fuzz{i}.{kind.lower()}"
        path.write_bytes(data)
        sent = upload(public, path)
        event, payload = call(public, "analyze", [sent, *options()])
        assert event == "complete" or (payload or {}).get("error"), payload
        event, outputs = call(public, "analyze_batch", [[sent, good], *options()[:4]])
        assert event == "complete", outputs
        assert "codait_bryan.png" in outputs[-1]["photos"]


def test_loose_api_values_get_readable_messages(public):
    face = upload(public, photo("codait_bryan.png"))
    assert "threshold" in refused(public, "analyze", [face, *options(threshold="0.3")])
    assert "threshold" in refused(public, "analyze", [face, *options(threshold=True)])
    assert "as text" in refused(public, "analyze", [face, *options(model=5)])
    assert "too long" in refused(public, "analyze", [face, *options(model="a/" + "b" * 300)])
    assert "true or false" in refused(public, "analyze", [face, *options(explain="false")])
    assert "'local', 'remote'" in refused(public, "analyze", [face, *options(backend="gpu")])


def test_remote_offline_is_a_message(public, monkeypatch):
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    face = upload(public, photo("codait_bryan.png"))
    message = refused(public, "analyze", [face, *options(backend="remote", token="hf_visitor_1")])
    assert "Could not reach" in message or "Inference" in message


def test_client_may_leave_out_token_and_explain(public):
    client = Client(public, verbose=False)
    *_, doc = client.predict(handle_file(str(photo("codait_bryan.png"))), "local", "", 0.3, api_name="/analyze")
    assert len(doc["faces"]) == 1
