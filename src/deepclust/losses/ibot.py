"""iBOT's masked-patch self-distillation loss (also DINOv2's patch term).

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, "iBOT: Image BERT Pre-Training with Online
Tokenizer", ICLR 2022 (arXiv:2111.07832), Sec. 3.2, Eq. (2); Oquab et al., "DINOv2", 2023,
Sec. 4 ("iBOT patch-level objective").

The student sees a global crop with some patches replaced by the mask token, the teacher
the same crop unmasked; on each *masked* token the student's patch distribution must match
the teacher's for the same view and position:

    P_t[b,n] = softmax((t_patch[b,n] - c2) / tau_tp)      (no gradient)
    l[b,n]   = - sum_k P_t[b,n,k] log_softmax(s_patch[b,n] / tau_s)_k
    L        = 1/B sum_b ( sum_n m[b,n] l[b,n] ) / max(1, sum_n m[b,n])

averaged over the global crops when several are passed (concatenate them along ``B``:
every crop has the same number of images, so the mean over all rows is the mean over crops
of the mean over images). Each masked token of image ``b`` weighs ``1 / (its number of masked
tokens)`` (DINOv2's ``masks_weight``); images without a mask contribute 0 but still count
in ``B`` (as in both official codes). ``tau_s = 0.1``; the patch teacher temperature
``tau_tp`` (0.04 -> 0.07) comes from the loop's schedule (`StepState.teacher_patch_temp`).

The patch center ``c2`` (`Center`, momentum 0.9) is a separate center from the [CLS] one,
updated with *all* teacher patch tokens (masked or not) after the loss. With
``centering="sinkhorn"`` (DINOv2's large models) the teacher targets of the masked tokens
are Sinkhorn-Knopp codes over the global set of masked tokens instead
(`deepclust.cluster.sinkhorn_knopp` with ``epsilon = tau_tp``, 3 iterations) and no center
is used.

Shapes: ``student_patch (B, N, K)``, ``teacher_patch (B, N, K)``, ``masks (B, N)`` bool.
Returns a scalar.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.cluster import sinkhorn_knopp
from deepclust.losses.center import Center

Centering = Literal["center", "sinkhorn"]


class iBOTPatchLoss(nn.Module):  # noqa: N801 -- the paper's name
    """Masked-token cross-entropy (see module doc).

    Args:
        out_dim: ``K`` (the patch head's output size).
        student_temp: ``tau_s`` (0.1).
        center_momentum: momentum of the patch center (0.9).
        centering: ``"center"`` (iBOT, DINOv2 default) or ``"sinkhorn"``.
        sinkhorn_iters: Sinkhorn-Knopp iterations (3).
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: Centering = "center", sinkhorn_iters: int = 3):
        super().__init__()
        if out_dim < 1 or student_temp <= 0 or centering not in ("center", "sinkhorn"):
            raise ValueError(f"iBOTPatchLoss needs out_dim >= 1, student_temp > 0, centering center|sinkhorn; "
                             f"got {out_dim}, {student_temp}, {centering!r}")
        self.student_temp = float(student_temp)
        self.centering = centering
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.center = Center(out_dim, center_momentum)

    def teacher_probs(self, teacher_masked: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        """Targets ``(M, K)`` for the ``M`` masked tokens' teacher outputs, no gradient."""
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        with torch.no_grad():
            t = teacher_masked.detach().float()
            if self.centering == "sinkhorn":
                return sinkhorn_knopp(t, epsilon=teacher_temp, n_iters=self.sinkhorn_iters)
            return F.softmax(self.center(t) / teacher_temp, dim=-1)

    def forward(self, student_patch: torch.Tensor, teacher_patch: torch.Tensor, masks: torch.Tensor, *,
                teacher_temp: float, update_center: bool = True) -> torch.Tensor:
        if student_patch.ndim != 3 or teacher_patch.shape != student_patch.shape \
                or masks.shape != student_patch.shape[:2]:
            raise ValueError(f"expected student/teacher patches (B, N, K) and masks (B, N), got "
                             f"{tuple(student_patch.shape)}, {tuple(teacher_patch.shape)}, {tuple(masks.shape)}")
        masks = masks.bool()
        weights = (1.0 / masks.sum(dim=1).clamp(min=1).float()).unsqueeze(1).expand_as(masks)[masks]
        p_t = self.teacher_probs(teacher_patch[masks], teacher_temp)
        log_p_s = F.log_softmax(student_patch[masks].float() / self.student_temp, dim=-1)
        loss = (torch.sum(-p_t * log_p_s, dim=-1) * weights).sum() / masks.shape[0]
        if update_center and self.centering == "center":
            self.center.update(teacher_patch)
        return loss


__all__ = ["Centering", "iBOTPatchLoss"]
