"""facenet-pytorch's three MTCNN networks run by ONNX Runtime, as drop-in torch modules.

The weights stay those inside facenet-pytorch's wheel: the first use exports them with torch.onnx.export
into a cache folder named after a hash of the weight files, the torch version and the opset, so an upgrade
of either re-exports; later starts only load the small files (P-Net 28 kB, R-Net 0.4 MB, O-Net 1.6 MB).

Why ONNX Runtime: on two busy CPU cores, one thread each, it ran these narrow networks (10 to 128
channels) 1.4x (P-Net) to 2x (R-Net, O-Net) faster than torch (about even on idle cores), it is a
maintained runtime, and a run holds no Python lock, so concurrent requests overlap. Where OpenVINO is
installed (a requirement) the networks run in it instead, faster again (emotion.onnx_runtime.OpenVinoSession):
R-Net and O-Net in batches of a few fixed sizes, P-Net on pyramid levels padded to a multiple of 16 px
(PaddedPNet), so that a few shapes recur instead of a new one per level of every photo.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import logging
import threading
import warnings
from pathlib import Path

import numpy as np
import torch

from emotion.onnx_runtime import cache_root, cached, openvino_session
from emotion.onnx_runtime import session as new_session

log = logging.getLogger(__name__)

OPSET = 17
CROP_BATCH = 32  # R-Net and O-Net crops per OpenVINO run (about its fastest per crop on one core)
PAD = 16  # P-Net's levels are padded to a multiple of this many pixels per side for OpenVINO
SMALL_LEVEL = 6000  # pixels: smaller levels run in ONNX Runtime, which is faster there (under 0.5 ms)
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
_sessions: dict[tuple[str, int, Path | None, str], object] = {}
_lock = threading.Lock()


def session(name: str, threads: int, folder: Path | None = None, runtime: str = "auto"):
    """``runtime`` "auto": OpenVINO where it is installed (P-Net through PaddedPNet), else ONNX Runtime;
    "onnxruntime": ONNX Runtime for all three."""
    with _lock:  # the first call exports (a second or two); the others wait for it instead of exporting too
        key = (name, threads, folder, runtime)
        if key not in _sessions:
            model = model_bytes(name, folder)
            _sessions[key] = _open(name, model, threads, runtime)
        return _sessions[key]


def _open(name: str, model: bytes, threads: int, runtime: str):
    if runtime == "auto":
        sample = NETS[name][2]
        try:
            if name == "pnet":  # ONNX Runtime beside it, for the small levels and the odd sides' strips
                return PaddedPNet(openvino_session(model, threads, sample), new_session(model, threads))
            # O-Net's last batch is split, R-Net's padded: which costs less (see OpenVinoSession).
            return openvino_session(model, threads, sample, CROP_BATCH, split=name == "onet")
        except ImportError as exc:
            log.warning("OpenVINO unavailable (%s): %s runs in ONNX Runtime", exc, name)
    return new_session(model, threads)


class PaddedPNet:
    """P-Net on a pyramid level padded with zeros to a multiple of PAD pixels per side, its outputs cut back
    to the level's: the outputs of the level itself (to float rounding: tests/test_detect.py checks 1e-5).

    P-Net is fully convolutional and its convolutions have no padding, so each output sees only its own
    12 x 12 window, never the padding, with one exception: its max-pooling rounds up, so at an odd side the
    last pooled row (column) is the maximum of one row alone, and padding would pair it with a row of
    padding. At an odd side the last output row (column) is therefore computed again on the level's last
    11 rows (columns), at their own size: the window of that output, pooled on the same grid (11 is odd, so
    the strip starts at an even row).

    ``fast`` is OpenVINO's session, ``exact`` ONNX Runtime's at the level's own size, used for the strips and
    for levels under SMALL_LEVEL pixels.
    """

    def __init__(self, fast, exact):
        self.fast, self.exact = fast, exact

    def prepare(self) -> None:
        self.fast.prepare()

    def run(self, _outputs, feeds: dict) -> list[np.ndarray]:
        (x,) = feeds.values()
        n, c, h, w = x.shape
        if h * w < SMALL_LEVEL or min(h, w) < 12:
            return self.exact.run(None, {"x": x})
        padded = np.empty((n, c, -(-h // PAD) * PAD, -(-w // PAD) * PAD), x.dtype)
        padded[:, :, :h, :w] = x
        padded[:, :, h:], padded[:, :, :h, w:] = 0, 0  # the padding: any finite value would do
        rows, cols = (h - 1) // 2 - 4, (w - 1) // 2 - 4  # P-Net's output size: ceil((side - 2) / 2) - 4
        outputs = [np.ascontiguousarray(out[:, :, :rows, :cols]) for out in self.fast.run(None, {"x": padded})]
        if h % 2:
            strip = self.exact.run(None, {"x": np.ascontiguousarray(x[:, :, h - 11 :])})
            for out, last in zip(outputs, strip):
                out[:, :, -1:] = last
        if w % 2:
            strip = self.exact.run(None, {"x": np.ascontiguousarray(x[:, :, :, w - 11 :])})
            for out, last in zip(outputs, strip):
                out[:, :, :, -1:] = last
        return outputs


class OnnxMTCNN:
    """``pnet``, ``rnet`` and ``onet`` like facenet_pytorch.MTCNN's, run on the CPU with ``threads`` threads
    per run (``runtime``: see session)."""

    def __init__(self, threads: int, folder: Path | None = None, runtime: str = "auto"):
        self.threads = max(1, threads)
        for name in NETS:
            setattr(self, name, OnnxModule(name, session(name, self.threads, folder, runtime)))

    def prepare(self) -> None:
        """Readies the calling thread's copy of each network (OpenVINO compiles one per thread)."""
        for name in NETS:
            getattr(getattr(self, name).session, "prepare", lambda: None)()
