"""DINO's self-distillation loss.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021 (arXiv:2104.14294), Sec. 3.1 and Alg. 1.

The student sees all ``V`` crops, the teacher only the ``G`` global ones. With head
outputs ``g_s`` (student) and ``g_t`` (teacher):

    P_t = softmax((g_t - c) / tau_t)          (no gradient: the teacher is an EMA)
    log P_s = log_softmax(g_s / tau_s)
    L = 1/n_pairs sum_{t in global} sum_{s != t} mean_b [ - sum_k P_t[b,k] log P_s[b,k] ]

``n_pairs = G * V - G`` (every teacher view with every *other* student view). The center
``c`` (`deepclust.losses.center.Center`, momentum 0.9, all-reduced over processes) avoids
collapse to one dimension and is updated with the teacher outputs after the loss.

``tau_s = 0.1``. The teacher temperature ``tau_t`` is an argument: the training loop
computes it from its schedule (`deepclust.core.schedules.teacher_temp_schedule`, 0.04 ->
0.07 in the paper) and passes it in, so the loss never reads the epoch.

Shapes: ``student_out`` a list of ``V`` tensors ``(B, K)`` (or one ``(V*B, K)`` tensor,
crop-major), ``teacher_out`` a list of ``G`` tensors ``(B, K)`` (or ``(G*B, K)``); the
center is ``(1, K)``. Returns a scalar.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.losses.center import Center


def _as_views(x: Sequence[torch.Tensor] | torch.Tensor, n: int | None, what: str) -> list[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        if n is None:
            raise ValueError(f"pass the number of {what} crops when {what} outputs are one tensor")
        return list(x.chunk(n))
    return list(x)


class DINOLoss(nn.Module):
    """Cross-entropy between centred, sharpened teacher and student distributions.

    Args:
        out_dim: ``K``, the head's output size (size of the center).
        student_temp: ``tau_s`` (0.1).
        center_momentum: ``m`` of the center EMA (0.9).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        if out_dim < 1 or student_temp <= 0:
            raise ValueError(f"DINOLoss needs out_dim >= 1 and student_temp > 0, got {out_dim}, {student_temp}")
        self.student_temp = float(student_temp)
        self.center = Center(out_dim, center_momentum)

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """``softmax((g_t - c) / tau_t)`` without gradient; ``(B, K) -> (B, K)``."""
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        with torch.no_grad():
            return F.softmax(self.center(teacher_out.detach().float()) / teacher_temp, dim=-1)

    def forward(self, student_out: Sequence[torch.Tensor] | torch.Tensor,
                teacher_out: Sequence[torch.Tensor] | torch.Tensor, *, teacher_temp: float,
                n_student_crops: int | None = None, n_teacher_crops: int | None = None,
                update_center: bool = True) -> torch.Tensor:
        """The loss for this step; then (by default) the center update with ``teacher_out``."""
        students = _as_views(student_out, n_student_crops, "student")
        teachers = _as_views(teacher_out, n_teacher_crops, "teacher")
        if len(students) < 2 or not teachers or len(teachers) > len(students):
            raise ValueError(f"DINO needs >= 2 student crops and 1..n_student teacher crops, "
                             f"got {len(students)} and {len(teachers)}")
        targets = [self.teacher_probs(t, teacher_temp) for t in teachers]
        total = students[0].new_zeros((), dtype=torch.float32)
        n_pairs = 0
        for it, p_t in enumerate(targets):
            for iv, s in enumerate(students):
                if iv == it:
                    continue  # the teacher's view i is student view i (global crops come first)
                log_p_s = F.log_softmax(s.float() / self.student_temp, dim=-1)
                total = total + torch.sum(-p_t * log_p_s, dim=-1).mean()
                n_pairs += 1
        loss = total / n_pairs
        if update_center:
            self.center.update(torch.cat(teachers))
        return loss


__all__ = ["DINOLoss"]
