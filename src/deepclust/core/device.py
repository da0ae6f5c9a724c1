"""Device and mixed-precision resolution: one place that decides where and in what precision
things run, and the autocast context every forward pass uses."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

from deepclust.errors import DeepclustError

#: Names accepted for mixed precision, by the loop (``amp``) and by embedding (``precision``).
PRECISIONS = ("auto", "off", "fp32", "bf16", "fp16")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) -> CUDA when a GPU is visible, else the CPU; other names are checked.

    Raises DeepclustError for a device that does not exist here (``cuda`` on a CPU-only
    install, ``cuda:3`` with two GPUs, a misspelt name)."""
    if isinstance(device, torch.device):
        return device
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(str(device))
    except (RuntimeError, ValueError) as exc:
        raise DeepclustError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeepclustError(f"device {device!r} was asked for but no CUDA GPU is visible "
                                 "(CPU-only torch, or no driver): use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeepclustError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise DeepclustError(f"device {device!r} is not available here: use --device cpu or auto")
    elif dev.type != "cpu":
        raise DeepclustError(f"unsupported device {device!r}: use auto, cpu, cuda or cuda:N")
    return dev


def amp_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for full float32.

    ``auto``: bf16 on a CUDA GPU that supports it (fp16 otherwise), float32 on the CPU;
    ``off``/``fp32``: float32; ``bf16``/``fp16``: that dtype."""
    if precision in ("off", "fp32"):
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision != "auto":
        raise DeepclustError(f"unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
