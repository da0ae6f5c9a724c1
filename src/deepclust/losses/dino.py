"""DINO's self-distillation loss with its center and teacher-temperature schedule.

Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021 (arXiv:2104.14294), Sec. 3.1 and Alg. 1.

The student sees all ``V`` crops, the teacher only the ``G`` global ones. With head
outputs ``g_s`` (student) and ``g_t`` (teacher):

    P_t = softmax((g_t - c) / tau_t)          (no gradient: the teacher is an EMA)
    log P_s = log_softmax(g_s / tau_s)
    L = 1/n_pairs sum_{t in global} sum_{s != t} mean_b [ - sum_k P_t[b,k] log P_s[b,k] ]

``n_pairs = G * V - G`` (every teacher view with every *other* student view). The center
``c`` avoids collapse to one dimension; after each step it moves towards the batch mean of
the teacher outputs,

    c <- m c + (1 - m) * (sum over every process' batch of g_t) / (global number of rows)

(``m = 0.9``), the sum and the count all-reduced across processes so every process holds
the same center. ``tau_s = 0.1``; ``tau_t`` rises linearly from 0.04 to its final value
(0.04-0.07) over the first ``warmup_teacher_temp_epochs`` (30 in the paper) and then
stays constant; sharpening (low ``tau_t``) and centering balance each other.

Shapes: ``student_out`` a list of ``V`` tensors ``(B, K)`` (or one ``(V*B, K)`` tensor,
crop-major), ``teacher_out`` a list of ``G`` tensors ``(B, K)`` (or ``(G*B, K)``); the
center is a buffer ``(1, K)``. Returns a scalar.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.core.distributed import all_reduce_sum


def teacher_temperature(epoch: float, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.07,
                        warmup_teacher_temp_epochs: float = 30) -> float:
    """Linear warm-up ``warmup_teacher_temp -> teacher_temp`` over the warm-up epochs, then
    constant (DINO's ``np.linspace`` schedule; ``epoch`` may be fractional)."""
    if warmup_teacher_temp_epochs <= 0 or epoch >= warmup_teacher_temp_epochs:
        return float(teacher_temp)
    frac = max(float(epoch), 0.0) / float(warmup_teacher_temp_epochs)
    return float(warmup_teacher_temp + frac * (teacher_temp - warmup_teacher_temp))


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
        warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: ``tau_t`` schedule.
        center_momentum: ``m`` of the center EMA (0.9).
    """

    center: torch.Tensor

    def __init__(self, out_dim: int, student_temp: float = 0.1, warmup_teacher_temp: float = 0.04,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: float = 30,
                 center_momentum: float = 0.9):
        super().__init__()
        if out_dim < 1 or student_temp <= 0 or teacher_temp <= 0 or warmup_teacher_temp <= 0:
            raise ValueError("DINOLoss needs out_dim >= 1 and positive temperatures, got "
                             f"{out_dim}, {student_temp}, {warmup_teacher_temp}, {teacher_temp}")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.student_temp = float(student_temp)
        self.warmup_teacher_temp = float(warmup_teacher_temp)
        self.teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp_epochs = float(warmup_teacher_temp_epochs)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, out_dim))

    def teacher_temperature(self, epoch: float) -> float:
        return teacher_temperature(epoch, self.warmup_teacher_temp, self.teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def teacher_probs(self, teacher_out: torch.Tensor, epoch: float) -> torch.Tensor:
        """``softmax((g_t - c) / tau_t)`` without gradient; ``(B, K) -> (B, K)``."""
        temp = self.teacher_temperature(epoch)
        with torch.no_grad():
            return F.softmax((teacher_out.detach().float() - self.center) / temp, dim=-1)

    def forward(self, student_out: Sequence[torch.Tensor] | torch.Tensor,
                teacher_out: Sequence[torch.Tensor] | torch.Tensor, epoch: float,
                n_student_crops: int | None = None, n_teacher_crops: int | None = None,
                update_center: bool = True) -> torch.Tensor:
        """The loss for this step; then (by default) the center update with ``teacher_out``."""
        students = _as_views(student_out, n_student_crops, "student")
        teachers = _as_views(teacher_out, n_teacher_crops, "teacher")
        if len(students) < 2 or not teachers or len(teachers) > len(students):
            raise ValueError(f"DINO needs >= 2 student crops and 1..n_student teacher crops, "
                             f"got {len(students)} and {len(teachers)}")
        targets = [self.teacher_probs(t, epoch) for t in teachers]
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
            self.update_center(torch.cat(teachers))
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * global batch mean of teacher_out (N, K)`` (all processes)."""
        t = teacher_out.detach().float()
        # One collective: the column sums and the row count, summed over processes.
        stats = torch.cat([t.sum(dim=0), t.new_tensor([t.shape[0]])])
        stats = all_reduce_sum(stats)
        batch_center = (stats[:-1] / stats[-1].clamp(min=1)).unsqueeze(0)
        self.center.mul_(self.center_momentum).add_(batch_center * (1.0 - self.center_momentum))


__all__ = ["DINOLoss", "teacher_temperature"]
