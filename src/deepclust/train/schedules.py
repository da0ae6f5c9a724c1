"""Per-step schedules (learning rate, weight decay, teacher momentum), as in DINO.

Schedules are precomputed numpy arrays indexed by the global optimisation step, so that
resuming a run at step `s` continues the exact same curve (the position is just `s`).
"""

from __future__ import annotations

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """Linear warm-up from `start_warmup` to `base` over `warmup_steps`, then a half cosine
    from `base` down (or up) to `final` over the remaining steps.

    value(t) = final + 0.5 (base - final) (1 + cos(pi t / T)),  t = 0..T-1 after warm-up
    (DINO's `cosine_scheduler`, expressed in steps instead of epochs x iterations).

    Returns a float64 array of length `total_steps`.
    """
    if total_steps < 0 or warmup_steps < 0:
        raise ValueError(f"total_steps ({total_steps}) and warmup_steps ({warmup_steps}) must be >= 0")
    warmup_steps = min(warmup_steps, total_steps)
    warmup = np.linspace(start_warmup, base, warmup_steps, endpoint=False) if warmup_steps else np.array([])
    rest = total_steps - warmup_steps
    t = np.arange(rest)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * t / max(1, rest)))
    schedule = np.concatenate([warmup, cosine]).astype(np.float64)
    assert len(schedule) == total_steps
    return schedule


def scaled_lr(base_lr: float, global_batch_size: int, reference_batch: int = 256) -> float:
    """The linear scaling rule used by SwAV, DINO and MoCo: lr = base_lr * batch / 256.

    `base_lr` in configs is the learning rate *for a batch of 256 images*; the loop applies
    this rule with the global batch (per-process batch x number of processes).
    """
    return base_lr * global_batch_size / reference_batch
