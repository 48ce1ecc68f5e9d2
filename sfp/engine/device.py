"""Device and precision resolution with clear errors."""
from __future__ import annotations

import logging

import torch

from ..config.schema import Precision
from ..errors import ConfigError

log = logging.getLogger(__name__)

_DTYPES = {Precision.float32: torch.float32, Precision.float16: torch.float16, Precision.bfloat16: torch.bfloat16}


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


def resolve_dtype(precision: Precision | str, device: torch.device) -> torch.dtype:
    if precision not in {p.value for p in Precision}:
        raise ConfigError(f"inference.precision={precision!r}: expected one of {', '.join(p.value for p in Precision)}")
    precision = Precision(precision)
    if precision == Precision.float16 and device.type != "cuda":
        # Allowed so that float16 numerics can be checked without a GPU, but the CPU has no fast float16 kernels.
        log.warning(
            "inference.precision=float16 on %s runs emulated float16 kernels (several times slower than float32): "
            "use it to check float16 numerics; bfloat16 is the fast reduced precision on a CPU", device)
    return _DTYPES[precision]
