"""The machine's limits, measured in the same run as a benchmark: float32 and bfloat16 matmul
peaks (best of a few ``n x n @ n x n`` products, ``2 n^3`` FLOPs each), plus a one-line
description of the machine and its load, so every figure in BENCHMARKS.md can stand beside
what the hardware could do.

    from machine import matmul_peaks, machine_line
    peaks = matmul_peaks()            # {"fp32": FLOP/s, "bf16": FLOP/s}
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_flops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                 device: torch.device | str = "cpu") -> float:
    """Best FLOP/s of an ``(n, n) @ (n, n)`` matmul in ``dtype`` on ``device``."""
    device = torch.device(device)
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b  # warm-up (allocator, kernel selection)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def matmul_peaks(n: int = 2048, device: torch.device | str = "cpu") -> dict[str, float]:
    """``{"fp32": FLOP/s, "bf16": FLOP/s}`` with the current torch thread count."""
    return {"fp32": matmul_flops(torch.float32, n, device=device),
            "bf16": matmul_flops(torch.bfloat16, n, device=device)}


def best_peaks(*measurements: dict[str, float]) -> dict[str, float]:
    """Per dtype, the best of several ``matmul_peaks`` results (e.g. before and after a run):
    the machine's limit, least disturbed by anything else that ran at the time."""
    return {k: max(m[k] for m in measurements) for k in measurements[0]}


def machine_line(peaks: dict[str, float] | None = None) -> str:
    """``x86_64, 2 cores, torch 2.13.0+cpu, 2 threads, load 0.31 / 0.40 / 0.52; matmul fp32 42 / bf16 185 GFLOP/s``."""
    load = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    line = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads, load {load}")
    if peaks:
        line += "; matmul " + " / ".join(f"{k} {v / 1e9:.0f}" for k, v in peaks.items()) + " GFLOP/s"
    return line


def write_report(text: str, data: Any, out: str | None) -> None:
    """Print a benchmark's Markdown ``text``; with ``out``, also write it there and ``data`` as JSON
    beside it (same name, ``.json``)."""
    print(text)
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(data, indent=1))
