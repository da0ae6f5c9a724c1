"""Schedules as arrays indexed by the global optimisation step, as in DINO and DINOv2.

The loop computes every per-iteration value (learning rate, weight decay, teacher momentum,
teacher temperature) from these arrays and passes it to the method; losses never read the
epoch. Resuming at step ``s`` continues the exact same curve (the position is just ``s``).

Definitions follow the official code:

* `cosine_schedule` is DINO's ``utils.cosine_scheduler`` / DINOv2's ``CosineScheduler``:
  ``linspace(start_warmup, base, W)`` (both ends included, so the last warm-up step is
  ``base``) followed by ``final + (base - final) (1 + cos(pi t / T')) / 2`` for
  ``t = 0 .. T' - 1``, ``T' = total - W``.
* The teacher momentum is the same cosine from ``m0`` (0.996) to 1 over all steps.
* `teacher_temp_schedule` is DINO's ``concat(linspace(warmup, final, W), full(n - W, final))``:
  indexed by epoch it reaches ``final`` at epoch ``W - 1``; DINOv2 applies the same shape
  per iteration (``per_iteration=True``).
* `scaled_lr`: the linear rule (``lr x batch / 256``) or DINOv2's square-root rule
  (``lr x sqrt(batch / 1024)``).
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    base: float,
    final: float,
    total_steps: int,
    warmup_steps: int = 0,
    start_warmup: float = 0.0,
) -> np.ndarray:
    """Linear warm-up ``start_warmup -> base`` over `warmup_steps` (ends included), then a half
    cosine from `base` to `final` over the remaining steps. float64 array of `total_steps`."""
    if total_steps < 0 or warmup_steps < 0:
        raise ValueError(f"total_steps ({total_steps}) and warmup_steps ({warmup_steps}) must be >= 0")
    warmup_steps = min(int(warmup_steps), int(total_steps))
    warmup = np.linspace(start_warmup, base, warmup_steps)
    rest = total_steps - warmup_steps
    t = np.arange(rest)
    cosine = final + 0.5 * (base - final) * (1.0 + np.cos(np.pi * t / max(1, rest)))
    return np.concatenate([warmup, cosine]).astype(np.float64)


def cosine_momentum_schedule(base: float, final: float, total_steps: int) -> np.ndarray:
    """EMA teacher momentum per step: `cosine_schedule(base, final, total_steps)` (DINO:
    ``cosine_scheduler(momentum_teacher, 1, epochs, niter_per_ep)``)."""
    return cosine_schedule(base, final, total_steps)


def teacher_temp_schedule(
    warmup_temp: float,
    final_temp: float,
    warmup_epochs: float,
    epochs: int,
    steps_per_epoch: int,
    *,
    per_iteration: bool = False,
) -> np.ndarray:
    """Teacher temperature for every step of `epochs` x `steps_per_epoch`.

    Per epoch (DINO, the default): ``v = concat(linspace(warmup, final, W), full(epochs - W, final))``
    with ``W = warmup_epochs`` and step ``s`` takes ``v[s // steps_per_epoch]``, so epoch
    ``W - 1`` already uses ``final``. Per iteration (DINOv2): the same construction over
    steps, ``W = warmup_epochs x steps_per_epoch`` warm-up steps. Warm-ups longer than the run
    are cut at the end of the run.
    """
    if per_iteration:
        n, w = epochs * steps_per_epoch, int(round(warmup_epochs * steps_per_epoch))
    else:
        n, w = epochs, int(round(warmup_epochs))
    values = np.concatenate([np.linspace(warmup_temp, final_temp, w),
                             np.full(max(0, n - w), float(final_temp))])[:n]
    if not per_iteration:
        values = np.repeat(values, steps_per_epoch)
    return values.astype(np.float64)


def scaled_lr(base_lr: float, global_batch_size: int, reference_batch: int | None = None,
              rule: str = "linear") -> float:
    """The learning rate for a global batch, from the base learning rate of a recipe.

    * ``rule="linear"`` (SwAV, DINO, MoCo; the default): ``lr = base_lr * batch / 256``;
    * ``rule="sqrt"`` (DINOv2's ``optim.scaling_rule: sqrt_wrt_1024``):
      ``lr = base_lr * sqrt(batch / 1024)``.

    `base_lr` in configs is the learning rate *for the reference batch* (256 images for the
    linear rule, 1024 for the square-root rule; `reference_batch` overrides it); the loop
    applies the rule with the global batch (per-process batch x number of processes).
    """
    if rule == "linear":
        return base_lr * global_batch_size / (reference_batch or 256)
    if rule == "sqrt":
        return base_lr * math.sqrt(global_batch_size / (reference_batch or 1024))
    raise ValueError(f"unknown learning-rate scaling rule {rule!r}; use 'linear' or 'sqrt'")
