"""Pick the device and the compute dtype once, in one place."""

from __future__ import annotations

import torch


def pick_device(name: str = "auto") -> torch.device:
    """ "auto" gives CUDA, then Apple's MPS, then the CPU; any torch device string is passed through."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """Half precision on accelerators (bf16 where supported: same range as fp32), fp32 on the CPU."""
    if device.type == "cuda":
        # Native bf16 needs compute capability 8.0 (Ampere) or later; is_bf16_supported() alone also counts
        # emulation, which makes T4 and V100 GPUs slower than fp16.
        return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32
