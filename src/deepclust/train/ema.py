"""Exponential moving average of weights (mean teacher) and its momentum schedule.

Used by DINO (teacher = EMA of student) and available to any method through
`after_optimizer_step`.
"""

from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, parameter by parameter.

    Floating-point buffers (e.g. BatchNorm running statistics) are averaged the same way;
    integer buffers (num_batches_tracked) are copied. Both modules must have the same
    structure (same parameter names and shapes).
    """
    t_params = dict(teacher.named_parameters())
    s_params = dict(student.named_parameters())
    if t_params.keys() != s_params.keys():
        missing = sorted(set(s_params) ^ set(t_params))[:5]
        raise ValueError(f"teacher and student differ in parameters (e.g. {missing}); build the teacher as a copy of the student")
    for name, tp in t_params.items():
        tp.data.lerp_(s_params[name].data, 1.0 - momentum)
    s_buffers = dict(student.named_buffers())
    for name, tb in teacher.named_buffers():
        sb = s_buffers.get(name)
        if sb is None:
            continue
        if tb.dtype.is_floating_point:
            tb.lerp_(sb, 1.0 - momentum)
        else:
            tb.copy_(sb)


def cosine_momentum(base: float = 0.996, final: float = 1.0, step: int = 0, total: int = 1) -> float:
    """DINO/BYOL teacher momentum: m(t) = final - (final - base) (cos(pi t / T) + 1) / 2.

    Starts at `base` (t=0) and rises to `final` at t=T; t is clamped to [0, T].
    """
    t = min(max(step, 0), max(total, 1))
    return final - (final - base) * (math.cos(math.pi * t / max(total, 1)) + 1.0) / 2.0
