"""facenet-pytorch's three MTCNN networks run by ONNX Runtime, as drop-in torch modules.

The weights stay those inside facenet-pytorch's wheel: the first use exports them with torch.onnx.export
into a cache folder named after a hash of the weight files, the torch version and the opset, so an upgrade
of either re-exports; later starts only load the small files (P-Net 28 kB, R-Net 0.4 MB, O-Net 1.6 MB).

Why ONNX Runtime: on two busy CPU cores, one thread each, it ran these narrow networks (10 to 128
channels) 1.4x (P-Net) to 2x (R-Net, O-Net) faster than torch (about even on idle cores), it is a
maintained runtime, and a run holds no Python lock, so concurrent requests overlap.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import threading
import warnings
from pathlib import Path

import torch

from emotion.onnx_runtime import cache_root, cached
from emotion.onnx_runtime import session as new_session

log = logging.getLogger(__name__)

OPSET = 17
# name -> (facenet-pytorch class, outputs in its forward's order, a sample input shape for the export)
NETS = {
    "pnet": ("PNet", ("reg", "prob"), (1, 3, 64, 64)),
    "rnet": ("RNet", ("reg", "prob"), (2, 3, 24, 24)),
    "onet": ("ONet", ("reg", "landmarks", "prob"), (2, 3, 48, 48)),
}


def weights_folder() -> Path:
    # Found without importing facenet_pytorch: its import brings torchvision's (seconds of start-up).
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("facenet-pytorch is not installed: it holds MTCNN's weights")
    return Path(spec.submodule_search_locations[0]).resolve() / "data"


def cache_folder() -> Path:
    """emotion/mtcnn-onnx in the cache (emotion.onnx_runtime: EMOTION_CACHE, else XDG_CACHE_HOME, else ~/.cache)."""
    return cache_root() / "mtcnn-onnx"


def fingerprint() -> str:
    """Changes with the wheel's weights, the exporter (torch version) and the opset."""
    digest = hashlib.sha256(f"torch {torch.__version__} opset {OPSET}".encode())
    for name in NETS:
        digest.update((weights_folder() / f"{name}.pt").read_bytes())
    return digest.hexdigest()[:16]


def export(name: str) -> bytes:
    """The ONNX model of one of facenet-pytorch's networks, from the weights in its wheel."""
    from facenet_pytorch.models import mtcnn

    cls, outputs, shape = NETS[name]
    module = getattr(mtcnn, cls)(pretrained=True).eval()
    axes = {"x": {0: "n", 2: "h", 3: "w"}} if name == "pnet" else {"x": {0: "n"}}
    axes.update({out: {0: "n"} for out in outputs})
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated in favour of one needing onnxscript
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            torch.zeros(shape),
            buffer,
            input_names=["x"],
            output_names=list(outputs),
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return buffer.getvalue()


def model_bytes(name: str, folder: Path | None = None) -> bytes:
    """The cached export of ``name``, made now when missing. An unwritable cache only costs the export time."""
    path = (folder or cache_folder()) / fingerprint() / f"{name}.onnx"
    return cached(path, lambda: export(name), f"facenet-pytorch's {name}")


class OnnxModule(torch.nn.Module):
    """One network as an ONNX Runtime session behind a torch module's interface: tensors in, tensors out.

    Being a module keeps forward hooks working (tests count the stage batches through them).
    InferenceSession.run is thread-safe: request threads share the session.
    """

    def __init__(self, name: str, session):
        super().__init__()
        self.name = name
        self.session = session

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outputs = self.session.run(None, {"x": x.detach().numpy()})
        return tuple(torch.from_numpy(out) for out in outputs)


# Shared by every detector of the process (the app's photo and webcam detectors too).
_sessions: dict[tuple[str, int, Path | None], object] = {}
_lock = threading.Lock()


def session(name: str, threads: int, folder: Path | None = None):
    with _lock:  # the first call exports (a second or two); the others wait for it instead of exporting too
        key = (name, threads, folder)
        if key not in _sessions:
            model = model_bytes(name, folder)
            _sessions[key] = new_session(model, threads)
        return _sessions[key]


class OnnxMTCNN:
    """``pnet``, ``rnet`` and ``onet`` like facenet_pytorch.MTCNN's, run by ONNX Runtime on the CPU with
    ``threads`` intra-op threads per run."""

    def __init__(self, threads: int, folder: Path | None = None):
        self.threads = max(1, threads)
        for name in NETS:
            setattr(self, name, OnnxModule(name, session(name, self.threads, folder)))
