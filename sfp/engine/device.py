"""Device and precision resolution with clear errors."""
from __future__ import annotations

import torch

from ..errors import ConfigError

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(spec: str, job_number: int = 0) -> torch.device:
    """auto: the GPU when present; with several GPUs, job k of a sweep takes GPU k mod count (launchers
    do not assign GPUs themselves)."""
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", job_number % torch.cuda.device_count())
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"inference.device={spec!r} is not a device: expected auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"inference.device={spec!r} but no CUDA GPU is available: use inference.device=auto or cpu")
    return device


def resolve_dtype(precision, device: torch.device) -> torch.dtype:
    name = getattr(precision, "value", precision)
    if name not in _DTYPES:
        raise ConfigError(f"inference.precision={name!r}: expected one of {', '.join(_DTYPES)}")
    if name == "float16" and device.type != "cuda":
        raise ConfigError("inference.precision=float16 needs a CUDA device; use float32 (or bfloat16) on the CPU")
    return _DTYPES[name]
