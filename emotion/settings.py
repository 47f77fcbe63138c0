"""One small settings object; every default is here, with the reason for it."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# The project's own ViT, shipped inside the package so the app works offline.
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent / "models" / "bundled"
BUNDLED = "bundled"

# Hub models offered in the UI. Locally any other hub id or folder may be typed in; a public Space
# accepts only these, the bundled model and EMOTION_ALLOWED_MODELS.
HUB_MODELS = (
    "dima806/facial_emotions_image_detection",
    "trpakov/vit-face-expression",
    "motheecreator/vit-Facial-Expression-Recognition",
    "LaurenGurgiolo/vit-micro-facial-expressions",
)


def _env_model() -> str:
    # A Space sets EMOTION_MODEL to change the default without touching code.
    return os.environ.get("EMOTION_MODEL", "").strip() or BUNDLED


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _env_count(name: str, default: int) -> int:
    """A whole number >= 0 from the environment variable ``name``; ``default`` when it is unset or empty."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    if not value.isdecimal():
        raise ValueError(f"{name} must be a whole number (0 or more), not {value!r}")
    return int(value)


def _env_public() -> bool:
    # Hugging Face Spaces set SPACE_ID: a Space is public unless its owner says otherwise.
    return bool(os.environ.get("SPACE_ID", "").strip()) or _env_flag("EMOTION_PUBLIC")


def _env_allowed() -> tuple[str, ...]:
    extra = (m.strip() for m in os.environ.get("EMOTION_ALLOWED_MODELS", "").split(","))
    return tuple(dict.fromkeys([*HUB_MODELS, *(m for m in extra if m)]))


@dataclass(frozen=True)
class Settings:
    model: str = field(default_factory=_env_model)  # "bundled", a hub id or a local folder
    remote_model: str = HUB_MODELS[0]  # used by the remote backend when no model is named
    device: str = "auto"  # "auto" picks CUDA, then MPS, then CPU
    # "auto": bf16 on CUDA GPUs that have it natively (else fp16), fp16 on MPS, fp32 on CPU; or "float32",
    # "bfloat16", "float16". EMOTION_DTYPE sets it for a Space.
    dtype: str = field(default_factory=lambda: os.environ.get("EMOTION_DTYPE", "auto"))
    # CPU classification with this project's own models (the bundled one, training's folders): "auto" runs them
    # in ONNX Runtime (exported once from their safetensors, cached), "torch" keeps them on torch.
    runtime: str = field(default_factory=lambda: os.environ.get("EMOTION_RUNTIME", "auto"))
    detector: str = "mtcnn"  # a name from emotion.detectors
    threshold: float = 0.3  # emotions at or above this probability are listed besides the top one
    # A face is "uncertain" when its top probability is below this, or leads the second by less than
    # uncertain_margin: the bundled model is calibrated, so 0.5 means "wrong about half the time".
    uncertain_below: float = 0.5
    uncertain_margin: float = 0.1
    margin: float = 0.25  # square crop side = face side * (1 + margin): brows, chin and jaw carry expression
    min_face_size: int = 20  # px; MTCNN finds nothing smaller
    min_detection_score: float = 0.9  # MTCNN's face probability below which a box is dropped
    max_faces: int = 32  # the largest faces are kept, the rest are reported as dropped
    detect_max_side: int = 1600  # larger photos are detected on a downscaled copy, boxes mapped back
    max_image_pixels: int = 40_000_000  # refuses decompression bombs before decoding
    max_upload_mb: int = 20  # uploads above this are refused by the server
    concurrency: int = 2  # requests worked on at once (2 cores); the rest wait in the queue
    # Processes that analyse photos for the server (emotion.serving.workers): each has its own interpreter lock,
    # so concurrent analyses use every core. 0: on the server's own threads. `python app.py` runs one per
    # concurrent request unless EMOTION_WORKERS says otherwise; the Python API and the CLI never use them.
    workers: int = field(default_factory=lambda: _env_count("EMOTION_WORKERS", 0))
    queue_size: int = 32  # requests waiting beyond this are turned away with a "queue full" message
    model_cache_models: int = 4  # models kept loaded (least recently used go first)
    model_cache_mb: int = 1024  # ... and at most this much memory for their weights
    model_failure_ttl_s: float = 60.0  # a model that failed to load is not tried again for this long
    explain_grid: int = 8  # heatmaps: occlusion windows per side (overlapping; 8 beats a fixed mouth prior)
    explain_batch: int = 32  # occluded copies per forward pass: faster than 256 on a CPU, and less memory
    remote_timeout: float = 30.0  # seconds per Inference API call
    remote_retries: int = 2  # retries after a 429, a 5xx or a dropped connection, with exponential backoff
    # --- Serving a public Space (see README, "Deploying as a public Space") ---
    public: bool = field(default_factory=_env_public)  # SPACE_ID or EMOTION_PUBLIC=1: allow-listed models only
    allowed_models: tuple[str, ...] = field(default_factory=_env_allowed)  # hub ids a public Space accepts
    share_token: bool = field(default_factory=lambda: _env_flag("EMOTION_SHARE_TOKEN"))  # owner's HF_TOKEN for visitors
    max_model_chars: int = 200  # longer model names are refused before anything is looked up
    max_batch_photos: int = 12  # photos per "Several photos" request
    max_batch_pixels: int = 120_000_000  # their pixels together, read from the headers before decoding
    max_request_mb: int = 64  # any HTTP request body (uploads of several files included)
    detect_max_candidates: int = 400  # MTCNN boxes kept after its first and second stages (best scores)
    # Threads per MTCNN network run. 0: one, and a detection that runs alone spreads its work over the cores
    # (its "lanes": the fastest answer for one visitor); 1: no lanes, every detection on one core (a lone
    # answer slower, the same requests per second under load: see README). EMOTION_DETECT_THREADS sets it.
    detect_threads: int = field(default_factory=lambda: _env_count("EMOTION_DETECT_THREADS", 0))
    cache_minutes: int = 20  # uploads and results are deleted this long after they were written
    remote_workers: int = 8  # concurrent Inference API calls per request
    # --- Video (emotion.video.VideoLimits holds the rest; any video_<name> field here overrides it) ---
    video_sample_fps: float = 5.0  # frames analysed per second of video: expressions last longer than 0.2 s
    video_max_mb: int = 60  # per video upload; under max_request_mb so the upload itself is not cut off
