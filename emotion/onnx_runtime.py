"""What MTCNN's networks (emotion.detectors.onnx_nets) and this project's own classifiers
(emotion.backends.onnx_local) share in ONNX Runtime: the exports kept on disk between runs, each file named by
a hash of what it was made from (so new weights or a new exporter make a new one), and the session options."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

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
