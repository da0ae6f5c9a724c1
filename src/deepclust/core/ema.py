"""Exponential moving average of weights (mean teacher).

A method declares its (teacher, student) pairs (``Method.ema_pairs``); the loop calls
`ema_update_` on each after every optimiser step with the scheduled momentum
(`deepclust.core.schedules.cosine_momentum_schedule`).
"""

from __future__ import annotations

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
        raise ValueError(f"teacher and student differ in parameters (e.g. {missing}); "
                         "build the teacher as a copy of the student")
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
