"""Device and mixed-precision resolution: one place that decides where and in what precision
things run, and the autocast context every forward pass uses."""

from __future__ import annotations

import contextlib
import functools
from contextlib import AbstractContextManager

import torch
from torch import nn

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


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions on this CPU (AMX or AVX-512 BF16)."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


#: Backbone name prefixes whose CPU training step is faster under bf16 autocast on a bf16 CPU,
#: for training images of at least `CPU_BF16_MIN_SIZE` px (`amp: auto` picks bf16 for them).
#: Measured alone on the 2-core dev CPU (AVX-512 BF16), 2026-12-01: at 32 px every backbone's
#: step was 1.2-1.7x faster (bench_train_step.py: small_cnn 64.6 -> 104 img/s, ResNet-18
#: 13.8 -> 21.7, vit_tiny 12.7 -> 18.8), and a 12-minute DINO CIFAR-10 run of the small CNN did
#: more epochs and learned more (5 vs 4 epochs, online 20-NN 0.43 vs 0.40, benchmarks/results/
#: cifar10_train.md). Below 32 px bf16 was not measured to pay (the 64-d
#: digits ViT at 8 px was slower in bf16), so small images stay float32.
CPU_BF16_BACKBONES: tuple[str, ...] = ("small_cnn", "resnet", "vit")
CPU_BF16_MIN_SIZE = 32


def amp_dtype(precision: str, device: torch.device, backbone: str | None = None,
              image_size: int | None = None) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for full float32.

    ``auto``: bf16 on a CUDA GPU that supports it (fp16 otherwise); on the CPU bf16 for the
    backbones named in `CPU_BF16_BACKBONES` at ``image_size >= CPU_BF16_MIN_SIZE`` when the CPU
    has bf16 instructions, else float32 (weights stay float32 either way: autocast only runs the
    matrix products in bf16); ``off``/``fp32``: float32; ``bf16``/``fp16``: that dtype."""
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
    if device.type == "cpu" and backbone and backbone.startswith(CPU_BF16_BACKBONES) \
            and image_size is not None and image_size >= CPU_BF16_MIN_SIZE and cpu_has_bf16():
        return torch.bfloat16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager[object]:
    """``torch.autocast`` for ``dtype`` on ``device``; a no-op context for None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def use_channels_last(module: nn.Module) -> bool:
    """Run the conv nets inside `module` in ``torch.channels_last``: every sub-module with a
    ``channels_last`` switch (`SmallCNN`, `ResNet`, student and teacher copies alike) converts
    its input and keeps its 4-d weights in that layout. Measured on the 2-core dev CPU: the
    small CNN's training step 1.6-1.7x faster (issue 13: 47 -> 77 img/s at 32 px; 101 -> 173 at
    28 px). Returns whether there was any."""
    found = [m for m in module.modules() if isinstance(getattr(m, "channels_last", None), bool)]
    for m in found:
        setattr(m, "channels_last", True)  # noqa: B010 (an attribute of SmallCNN / ResNet)
        m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return bool(found)
