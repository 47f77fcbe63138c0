"""What MTCNN's networks (emotion.detectors.onnx_nets) and this project's own classifiers
(emotion.backends.onnx_local) share: the ONNX exports kept on disk between runs, each file named by a hash of
what it was made from (so new weights or a new exporter make a new one), and the CPU runtimes that run them,
ONNX Runtime and OpenVINO, behind ONNX Runtime's ``run`` interface."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """EMOTION_CACHE, else XDG_CACHE_HOME, else ~/.cache; then emotion/."""
    root = os.environ.get("EMOTION_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "emotion"


def cached(path: Path, export: Callable[[], bytes], what: str) -> bytes:
    """The bytes at ``path``, or ``export()`` written there first. An unwritable cache only costs the export."""
    if path.is_file():
        return path.read_bytes()
    log.info("exporting %s to ONNX", what)
    data = export()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed: another process starting at the same time never reads half a file.
        with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".part", delete=False) as part:
            part.write(data)
        os.replace(part.name, path)
    except OSError as exc:
        log.warning("could not cache %s in %s: %s", what, path.parent, exc)
    return data


def session(model: bytes, threads: int):
    """A CPU session with ``threads`` threads per run (one run at a time inside it; calls from many threads
    are safe). Idle pool threads sleep instead of spinning: the other requests need the cores."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def openvino_session(model: bytes, threads: int, sample: tuple, batch: int | None = None, split: bool = False):
    """``model`` compiled by OpenVINO for the CPU, with ONNX Runtime's ``run``; ImportError without OpenVINO.
    ``sample``: an input shape the model accepts, run once now (see OpenVinoSession)."""
    return OpenVinoSession(_openvino(), model, threads, sample, batch, split)


def _openvino():
    """The openvino module, imported with its telemetry declined. Unless a user has opted out, importing
    OpenVINO writes a client id under ~/intel and sends a usage event to Google Analytics, from a process it
    starts for the purpose (in a worker process, a whole multiprocessing forkserver, which stayed behind when
    the server stopped). This app works offline and sends nothing: its models' weights are local, and the
    telemetry's one instance is made here first, declined, so that OpenVINO's own import finds it."""
    if "openvino" not in sys.modules:
        try:
            from openvino_telemetry import Telemetry
            from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker
        except ImportError:
            pass  # an OpenVINO without its telemetry package
        else:
            with _openvino_lock:
                check = OptInChecker.check
                OptInChecker.check = lambda self, *args, **kwargs: ConsentCheckResult.DECLINED
                try:
                    # OpenVINO's name: under another one, its import would make the instance anew.
                    Telemetry(app_name="OpenVINO", tid="none", backend="ga4", enable_opt_in_dialog=False)
                finally:
                    OptInChecker.check = check
    import openvino

    return openvino


_openvino_lock = threading.Lock()


class OpenVinoSession:
    """An ONNX model of one input run by OpenVINO's CPU plugin, in float32, ``threads`` threads per run.

    Why OpenVINO: its kernels ran MTCNN's networks 1.3x (P-Net) to 1.8-2.5x (R-Net, O-Net) faster than
    ONNX Runtime's on one core of this project's 2-core machine. It specialises them to each input shape, so
    a new shape costs a slower first run (about twice a later one), and a change of shape from one run to the
    next costs too. With ``batch`` (a power of two), batches are cut into runs of ``batch`` rows, and the
    rest (see ``pieces``) is either padded to the next power of two (at least ``batch // 8`` rows), or with
    ``split`` cut into power-of-two pieces (20 rows: 16 and 4): a handful of shapes in all. Splitting suits
    a network whose rows cost more than a run (O-Net, about 0.45 ms a crop), padding one whose rows cost
    less (R-Net, about 0.08 ms). The rows must be independent (each crop is one face candidate).

    Each calling thread compiles its own copy: one compiled model runs one request at a time, so lanes of a
    detection would take turns on it. OpenVINO's pinning is off, or each one-thread copy would be pinned to
    the same core; the precision is fixed at float32, which is not the default on CPUs with bfloat16 units.

    The session runs once on zeros of the ``sample`` shape as it is made: OpenVINO's Python layer sets up
    some of its state at the first run of the process, and two threads making that first run at once
    deadlocked (one holding the interpreter lock, the other that set-up: seen with two lanes of a detection).
    Sessions are made one at a time (emotion.detectors.onnx_nets holds a lock), so that first run is alone.
    """

    def __init__(
        self, openvino, model: bytes, threads: int, sample: tuple, batch: int | None = None, split: bool = False
    ):
        self.core = openvino.Core()
        self.model = self.core.read_model(model)
        self.batch, self.split = batch, split
        self.config = {
            "INFERENCE_PRECISION_HINT": "f32",
            "INFERENCE_NUM_THREADS": threads,
            "NUM_STREAMS": 1,
            "ENABLE_CPU_PINNING": False,
        }
        self._local = threading.local()
        self.run(None, {"x": np.zeros(sample, np.float32)})

    def prepare(self) -> None:
        """Compiles the calling thread's copy now (about 0.05 s for each of MTCNN's networks)."""
        self._request()

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            compiled = self.core.compile_model(self.model, "CPU", self.config)
            request = self._local.request = compiled.create_infer_request()
        return request

    def run_ends(self, n: int) -> list[int]:
        """Where the runs that ``run`` makes of ``n`` rows end, in order (one run without ``batch``)."""
        if self.batch is None:
            return [n]
        return [min(n, start + rows) for start, rows in pieces(n, self.batch, self.split)]

    def run(self, _outputs, feeds: dict) -> list[np.ndarray]:
        """All of the model's outputs, in its order, for the one input in ``feeds``."""
        (x,) = feeds.values()
        request = self._request()
        if self.batch is None:
            return list(request.infer({0: np.ascontiguousarray(x)}, share_inputs=True).to_tuple())
        parts = []
        for start, rows in pieces(len(x), self.batch, self.split):
            chunk = x[start : start + rows]
            if len(chunk) < rows:  # the last piece, padded
                chunk = np.concatenate([chunk, np.zeros((rows - len(chunk), *chunk.shape[1:]), chunk.dtype)])
            result = request.infer({0: np.ascontiguousarray(chunk)}, share_inputs=True)  # read, not copied
            parts.append([out[: len(x) - start] for out in result.to_tuple()])
        if not parts:  # no rows: what the model gives for none, in the outputs' shapes
            return [out[:0] for out in request.infer({0: np.zeros((1, *x.shape[1:]), x.dtype)}).to_tuple()]
        return [np.concatenate(outs) if len(parts) > 1 else outs[0] for outs in zip(*parts)]


def pieces(n: int, batch: int, split: bool) -> list[tuple[int, int]]:
    """(start, rows) of the runs that cover ``n`` rows in order: runs of ``batch`` rows, then the rest cut by
    its binary digits, largest first (``split``; 70 rows, batch 32: 32, 32, 4, 2), or else one run of the
    next power of two, at least ``batch // 8`` rows, that reaches past ``n`` (70 rows: 32, 32, 8)."""
    full, rest = n - n % batch, n % batch
    out = [(start, batch) for start in range(0, full, batch)]
    if rest and not split:
        return [*out, (full, min(batch, max(batch // 8, 1 << (rest - 1).bit_length())))]
    start = full
    for bit in reversed(range(rest.bit_length())):
        if rest >> bit & 1:
            out.append((start, 1 << bit))
            start += 1 << bit
    return out
