"""Where the arithmetic runs and in which precision.

Everything that depends on the hardware is decided here, once: which device
"auto" means, which mixed precision suits it, and the autocast context the
trainer, the samplers and the evaluator all use, so that one seed gives the
same digits whichever of them draws them.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def resolve_device(name: str = "auto") -> torch.device:
    """"auto": the GPU when there is one, else the CPU; otherwise the named device, if it exists."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} was asked for but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return device


def resolve_precision(amp: str, device: torch.device) -> str:
    """fp32, bf16 or fp16 for this device.

    "auto": bf16 on GPUs of compute capability >= 8.0 (A100, H100, RTX 30xx+);
    fp16 with loss scaling below that (T4, V100), where bf16 is emulated and
    slow even when ``torch.cuda.is_bf16_supported()`` says yes; fp32 on CPU,
    where bf16 autocast measured slower for this model (README, Benchmarks).
    """
    if amp not in PRECISIONS:
        raise ValueError(f"amp must be one of {PRECISIONS}, got {amp!r}")
    if amp != "auto":
        if amp == "fp16" and device.type != "cuda":
            raise ValueError("amp='fp16' needs a CUDA GPU; use 'auto', 'fp32' or 'bf16' on CPU")
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.get_device_capability(device) >= (8, 0) else "fp16"
    return "fp32"


def autocast(device: torch.device, precision: str, cache_casts: bool = True):
    """The network's arithmetic in ``precision`` (a no-op for fp32); the sampler's own maths stays fp32.

    ``cache_casts`` keeps each weight's low-precision copy for the whole block (a sampler calls the
    network many times with the same weights); a CUDA graph must not record such a cache.
    """
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache_casts)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
