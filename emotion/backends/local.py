"""Local classification: a transformers image-classification model, all faces in one forward pass.

preprocess (crops -> pixel tensor on the device) -> forward (logits) -> postprocess
(softmax, columns reordered onto the canonical labels).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from emotion.backends import arrange
from emotion.backends.cache import ModelCache
from emotion.device import pick_device, pick_dtype
from emotion.errors import ModelError
from emotion.labels import LABELS, label_mapping
from emotion.policy import download_token
from emotion.settings import BUNDLED, BUNDLED_MODEL_DIR, Settings

log = logging.getLogger(__name__)

# owner/name as the hub spells it (a bare name is allowed for old canonical models).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


def is_hub_id(name: str) -> bool:
    return bool(_HUB_ID.match(name)) and ".." not in name


def resolve(model: str) -> str | Path:
    """The folder or hub id behind a model name; ModelError if it can be neither."""
    name = (model or "").strip()
    if name in ("", BUNDLED):
        if not (BUNDLED_MODEL_DIR / "config.json").is_file():
            raise ModelError(f"The bundled model is missing from {BUNDLED_MODEL_DIR}; reinstall the package.")
        return BUNDLED_MODEL_DIR
    try:
        path = Path(name).expanduser()
        is_dir = path.is_dir()
    except (OSError, RuntimeError, ValueError):  # a name too long for the file system, an unknown ~user
        is_dir = False
    if is_dir:
        if not (path / "config.json").is_file():
            raise ModelError(f"The folder {name} holds no config.json: it is not a Hugging Face model folder.")
        return path.resolve()
    if name.startswith((".", "/", "~")) or not is_hub_id(name):
        raise ModelError(
            f"'{name}' is neither an existing model folder nor a Hugging Face model id like 'owner/model-name'."
        )
    return name


@dataclass(frozen=True)
class LoadedModel:
    model: torch.nn.Module
    processor: object
    device: torch.device
    dtype: torch.dtype
    order: tuple[int, ...]  # canonical label index of each model output
    grayscale: bool  # the model was trained on greyscale faces
    source_size: int | None  # ... of this side, before the processor resizes them
    flip_average: bool  # average the probabilities of each face and its mirror image
    temperature: float = 1.0  # logits are divided by it before the softmax (fitted on validation data)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.model.parameters(), *self.model.buffers()))


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_cache: ModelCache[LoadedModel] = ModelCache()


def cache_key(source: str | Path) -> str:
    """Hub ids are case-insensitive on the hub: one cache entry for every spelling."""
    return str(source) if isinstance(source, Path) else source.lower()


def load_model(
    model: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | str | None = None,
    settings: Settings | None = None,
    source: str | Path | None = None,
) -> LoadedModel:
    """A model and its image processor, from the bounded cache (loaded on first use).

    dtype: None or "auto" (bf16 on CUDA where the GPU has it natively, else fp16; fp16 on MPS; fp32 on
    CPU), a torch dtype or its name. source: what resolve(model) gave, when the caller has it already.
    """
    settings = settings or Settings()
    device = device if isinstance(device, torch.device) else pick_device(device or "auto")
    dtype = pick_dtype(device) if dtype in (None, "auto") else dtype
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ModelError(f"Unknown dtype '{dtype}': use auto, {', '.join(_DTYPES)}.")
        dtype = _DTYPES[dtype]
    source = resolve(model) if source is None else source
    _cache.max_items = settings.model_cache_models
    _cache.max_bytes = settings.model_cache_mb * 2**20
    _cache.failure_ttl_s = settings.model_failure_ttl_s
    key = (cache_key(source), str(device), str(dtype))
    token = download_token(settings)
    return _cache.get(key, lambda: _load(source, model or BUNDLED, device, dtype, token), lambda m: m.nbytes)


def _load(
    source: str | Path, name: str, device: torch.device, dtype: torch.dtype, token: bool | None = None
) -> LoadedModel:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    import emotion.models.vit  # noqa: F401  registers the bundled hybrid ViT with the Auto classes

    log.info("loading model %s on %s (%s)", name, device, dtype)
    try:
        net = AutoModelForImageClassification.from_pretrained(
            source, use_safetensors=True, trust_remote_code=False, dtype=dtype, token=token
        )
        processor = AutoImageProcessor.from_pretrained(source, trust_remote_code=False, token=token)
    except (OSError, ValueError, KeyError) as exc:
        where = "this folder" if isinstance(source, Path) else "the Hugging Face Hub"
        raise ModelError(
            f"Could not load the model '{name}' from {where}: {_first_line(exc)} "
            "Check the name and your internet connection (hub models need one the first time); "
            "the bundled model works offline."
        ) from exc
    order = tuple(label_mapping(net.config.id2label))
    prep = getattr(net.config, "emotion_preprocess", None) or {}
    calibration = getattr(net.config, "emotion_calibration", None) or {}
    # channels-last: the convolutional stages of the bundled model run about 20% faster on the CPU.
    net.to(device, memory_format=torch.channels_last).eval()
    return LoadedModel(
        model=net,
        processor=processor,
        device=device,
        dtype=dtype,
        order=order,
        grayscale=bool(prep.get("grayscale", False)),
        source_size=prep.get("source_size"),
        flip_average=bool(prep.get("flip_average", False)),
        temperature=float(calibration.get("temperature", 1.0)),
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if text.endswith(".") else text + "."


class LocalClassifier:
    """Classifies face crops with one batched forward pass."""

    backend = "local"

    def __init__(
        self,
        model: str = BUNDLED,
        device: torch.device | str | None = None,
        dtype: torch.dtype | str | None = None,
        settings: Settings | None = None,
        source: str | Path | None = None,
    ):
        self.loaded = load_model(model, device, dtype, settings, source)
        self.name = (model or "").strip() or BUNDLED  # as the caller spelled it, whoever loaded it first

    def preprocess(self, crops: list[Image.Image]) -> torch.Tensor:
        m = self.loaded
        if m.grayscale:
            crops = [c.convert("L") for c in crops]
        if m.source_size:
            # Reduce the face to what the training data held (e.g. 48x48) before the processor resizes it.
            crops = [c.resize((m.source_size, m.source_size), Image.BILINEAR) for c in crops]
        # uint8 CHW tensors: the torchvision-backed processors resize and normalise them on the device, batched.
        tensors = [torch.from_numpy(np.array(c.convert("RGB"))).permute(2, 0, 1) for c in crops]
        out = m.processor(images=tensors, return_tensors="pt", device=m.device)
        pixel_values = out["pixel_values"].to(m.device, m.dtype)
        if m.flip_average:
            # Mirror images ride in the same batch: still one forward pass.
            pixel_values = torch.cat([pixel_values, pixel_values.flip(-1)])
        return pixel_values

    @torch.inference_mode()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.loaded.model(pixel_values=pixel_values).logits

    def postprocess(self, logits: torch.Tensor) -> np.ndarray:
        """(n, 7) probabilities in the canonical label order."""
        probs = (logits.float() / self.loaded.temperature).softmax(-1).cpu().numpy()
        return arrange(probs, self.loaded.order, self.loaded.flip_average)

    def __call__(self, crops: list[Image.Image]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(LABELS)))
        return self.postprocess(self.forward(self.preprocess(crops)))


def build(model: str, settings: Settings, token: str | None = None):
    """ONNX Runtime for this project's own model folders on the CPU (emotion.backends.onnx_local), torch for
    everything else; both classify the same way."""
    from emotion.backends import onnx_local

    name = model or settings.model
    source = resolve(name)
    if onnx_local.usable(source, settings) and str(source) not in _no_onnx:
        try:
            return onnx_local.OnnxClassifier((name or "").strip() or BUNDLED, source, settings)
        except Exception as exc:  # an exporter or runtime that fails on this folder: torch still works
            log.warning("%s stays on torch: its ONNX export or session failed (%s)", source, exc)
            _no_onnx.add(str(source))
    return LocalClassifier(name, settings.device, settings.dtype, settings, source)


_no_onnx: set[str] = set()  # folders whose ONNX path failed once: not tried again by this process
