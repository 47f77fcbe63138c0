"""This project's own models (the bundled one, and folders made by ``python -m emotion.training``) on the CPU
in ONNX Runtime: the same faces in, the same probabilities out, as LocalClassifier's torch path.

Why: a served answer needs neither transformers nor torchvision at all this way, which is most of the start-up
(importing them took about 3 s of the first answer's 6 s on two cores, measured), and ONNX Runtime runs the
small network faster than torch's eager modules. The folder's safetensors stay the source of truth: the first
use exports them with torch.onnx.export into a cache file named after a hash of the folder's files and of the
exporter's versions, so a retrained model (or an upgrade) exports again; later starts only load that file.

Only folders that can be run this way exactly take this path: the project's hybrid ViT, with a ViT image
processor whose input side is the face's ``source_size`` (so its resize does nothing and the pixels are plain
rescaled, normalised values). Everything else (hub models, GPUs, other dtypes) stays on torch.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from emotion.backends import arrange
from emotion.backends.cache import ModelCache
from emotion.labels import LABELS, label_mapping
from emotion.onnx_runtime import cache_root, cached, session
from emotion.settings import Settings

log = logging.getLogger(__name__)

OPSET = 17
MODEL_TYPE = "emotion-hybrid-vit"
_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")


@dataclass(frozen=True)
class OnnxModel:
    session: object  # an onnxruntime.InferenceSession: thread-safe, shared by the request threads
    order: tuple[int, ...]  # canonical label index of each model output
    grayscale: bool
    source_size: int  # the face is resized to this square, which is also the network's input
    flip_average: bool
    temperature: float
    mean: np.ndarray  # (3, 1, 1): the processor's normalisation, in pixel values (0-255)
    std: np.ndarray
    nbytes: int


@functools.lru_cache(maxsize=64)
def plan(folder: Path) -> dict | None:
    """What the ONNX path needs from a model folder, or None when the folder cannot take it exactly.

    Read once per folder and process, like the loaded models (the cache is keyed by the folder too): every
    request asks, and need not read two JSON files each time. Treat the answer as read-only."""
    try:
        config = json.loads((folder / "config.json").read_text())
        processor = json.loads((folder / "preprocessor_config.json").read_text())
    except (OSError, ValueError):
        return None
    prep = config.get("emotion_preprocess") or {}
    size = processor.get("size") or {}
    side = prep.get("source_size")
    if (
        config.get("model_type") != MODEL_TYPE
        or not (folder / "model.safetensors").is_file()
        or processor.get("image_processor_type") not in ("ViTImageProcessor", "ViTImageProcessorFast")
        or not side
        or size.get("height") != side
        or size.get("width") != side
    ):
        return None
    return {"config": config, "processor": processor, "side": int(side), "prep": prep}


def usable(source, settings: Settings) -> bool:
    """Whether LocalClassifier's work for ``source`` (a folder or a hub id) runs here: an exportable folder,
    float32 on the CPU, and ONNX Runtime installed."""
    if not isinstance(source, Path) or settings.runtime == "torch":
        return False
    if settings.dtype not in ("auto", "float32") or not _on_cpu(settings.device):
        return False
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return plan(source) is not None


def _on_cpu(device: str) -> bool:
    if device == "cpu":
        return True
    if device != "auto":
        return False
    from emotion.device import pick_device

    return pick_device("auto").type == "cpu"


def cache_folder() -> Path:
    """emotion/classifier-onnx in the cache (emotion.onnx_runtime: EMOTION_CACHE, else XDG_CACHE_HOME, else
    ~/.cache)."""
    return cache_root() / "classifier-onnx"


def fingerprint(folder: Path) -> str:
    """Changes with any of the folder's files and with the exporter (torch, transformers) and the opset."""
    from importlib.metadata import version

    digest = hashlib.sha256(f"torch {version('torch')} transformers {version('transformers')} {OPSET}".encode())
    for name in _FILES:
        digest.update((folder / name).read_bytes())
    return digest.hexdigest()[:16]


def export(folder: Path) -> bytes:
    """The ONNX model of the folder's network: pixel values (N, 3, side, side) in, logits (N, labels) out."""
    import torch

    from emotion.backends.local import load_model

    loaded = load_model(str(folder), "cpu", torch.float32)
    side = plan(folder)["side"]

    class Logits(torch.nn.Module):  # the bare logits: the exporter takes tensors, not output dataclasses
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, pixel_values):
            return self.net(pixel_values=pixel_values).logits

    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated in favour of one needing onnxscript
        torch.onnx.export(
            Logits(loaded.model).eval(),
            (torch.zeros(2, 3, side, side),),
            buffer,
            input_names=["pixel_values"],
            output_names=["logits"],
            dynamic_axes={"pixel_values": {0: "faces"}, "logits": {0: "faces"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def model_bytes(folder: Path) -> bytes:
    """The cached export for ``folder``, made now when missing. An unwritable cache only costs the export."""
    return cached(cache_folder() / f"{fingerprint(folder)}.onnx", lambda: export(folder), str(folder))


def _load(folder: Path, threads: int) -> OnnxModel:
    info = plan(folder)
    config, processor, prep = info["config"], info["processor"], info["prep"]
    data = model_bytes(folder)
    id2label = {int(k): v for k, v in config["id2label"].items()}

    # The processor's rescale and normalisation as one step, as its fast (torchvision) version fuses them.
    rescale = float(processor.get("rescale_factor", 1 / 255)) if processor.get("do_rescale", True) else 1.0
    normalize = processor.get("do_normalize", True)
    mean = np.asarray(processor.get("image_mean", [0.5] * 3) if normalize else [0.0] * 3, np.float32) / rescale
    std = np.asarray(processor.get("image_std", [0.5] * 3) if normalize else [1.0] * 3, np.float32) / rescale
    return OnnxModel(
        session=session(data, threads),
        order=tuple(label_mapping(id2label)),
        grayscale=bool(prep.get("grayscale", False)),
        source_size=info["side"],
        flip_average=bool(prep.get("flip_average", False)),
        temperature=float((config.get("emotion_calibration") or {}).get("temperature", 1.0)),
        mean=mean.astype(np.float32).reshape(-1, 1, 1),
        std=std.astype(np.float32).reshape(-1, 1, 1),
        nbytes=len(data),
    )


_cache: ModelCache[OnnxModel] = ModelCache()


class OnnxClassifier:
    """LocalClassifier's interface (preprocess -> forward -> postprocess, one batch) on ONNX Runtime."""

    backend = "local"

    def __init__(self, name: str, folder: Path, settings: Settings):
        _cache.max_items = settings.model_cache_models
        _cache.max_bytes = settings.model_cache_mb * 2**20
        _cache.failure_ttl_s = settings.model_failure_ttl_s
        # As many threads as torch has on this thread: every core from a script or the CLI, and in the app
        # cores // concurrency (each worker thread's share, set by app._share_cores). One session per count.
        import torch

        threads = max(1, torch.get_num_threads())
        self.loaded = _cache.get((str(folder), threads), lambda: _load(folder, threads), lambda m: m.nbytes)
        self.name = name

    def preprocess(self, crops: list[Image.Image]) -> np.ndarray:
        m = self.loaded
        side = m.source_size
        if m.grayscale:
            crops = [c.convert("L") for c in crops]
        faces = np.stack([np.asarray(c.resize((side, side), Image.BILINEAR).convert("RGB")) for c in crops])
        pixels = (faces.transpose(0, 3, 1, 2).astype(np.float32) - m.mean) / m.std
        if m.flip_average:  # mirror images ride in the same batch: still one run
            pixels = np.concatenate([pixels, pixels[..., ::-1]])
        return np.ascontiguousarray(pixels)

    def forward(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.loaded.session.run(None, {"pixel_values": pixel_values})[0]

    def postprocess(self, logits: np.ndarray) -> np.ndarray:
        """(n, 7) probabilities in the canonical label order."""
        z = logits.astype(np.float64) / self.loaded.temperature
        probs = np.exp(z - z.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        return arrange(probs, self.loaded.order, self.loaded.flip_average)

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(LABELS)))
        return self.postprocess(self.forward(self.preprocess(crops)))
