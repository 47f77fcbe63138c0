"""Shared fixtures: isolated environment, tiny real transformers models, the shared photos."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from emotion.labels import LABELS

ROOT = Path(__file__).resolve().parents[1]
PHOTOS = ROOT.parent / "shared" / "photos"
FER = ROOT.parent / "shared" / "data" / "fer2013"

# Set before gradio, transformers or huggingface_hub are imported (they read these once, at import).
# This machine has no internet: an offline hub fails at once instead of after five retries.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch):
    """No token and no model override leak in from the developer's shell."""
    for name in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "EMOTION_MODEL",
        "SPACE_ID",
        "EMOTION_PUBLIC",
        "EMOTION_ALLOWED_MODELS",
        "EMOTION_SHARE_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)


def photo(name: str) -> Path:
    path = PHOTOS / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    return path


def make_tiny_vit(folder: Path, id2label: dict[int, str], seed: int = 0, image_size: int = 32) -> Path:
    """A real (tiny, random) transformers ViT classifier saved as a hub-style folder."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = ViTForImageClassification(config)
    # Random init gives near-uniform outputs; larger classifier weights make the
    # probabilities distinct, so reordering mistakes cannot hide.
    with torch.no_grad():
        model.classifier.weight.mul_(50)
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(
        size={"height": image_size, "width": image_size}, image_mean=[0.5] * 3, image_std=[0.5] * 3
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_vit(tmp_path_factory.mktemp("tiny_vit"), dict(enumerate(LABELS)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(settings):
    """The real app (build_demo, launch_options as app.py uses them) on a free loopback port: (demo, url)."""
    from app import build_demo, launch_options

    demo = build_demo(settings)
    port = free_port()
    demo.launch(
        server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options(settings)
    )
    return demo, f"http://127.0.0.1:{port}/"


@pytest.fixture(scope="session")
def server(tiny_model):
    """The real app on a free loopback port, with the tiny ViT as its default model."""
    from emotion.settings import Settings

    demo, url = launch_app(Settings(model=str(tiny_model)))
    yield url
    demo.close()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    return Client(server, verbose=False)
