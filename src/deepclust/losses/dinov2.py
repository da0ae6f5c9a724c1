"""DINOv2's image-level terms: the DINO [CLS] loss with a selectable teacher centring, and
KoLeo per global crop.

Oquab, Darcet, Moutakanni, et al., "DINOv2: Learning Robust Visual Features without
Supervision", 2023 (arXiv:2304.07193), Sec. 4.

* `DINOv2ClsLoss`: DINO's cross-view loss (`deepclust.losses.dino.DINOLoss`, the formula
  is in its docstring) whose teacher targets are either ``softmax((g_t - c) / tau_t)`` with
  the moving-average center (``centering="center"``, DINO / iBOT, the default) or
  Sinkhorn-Knopp codes (``centering="sinkhorn"``, SwAV's centring, as in DINOv2's large
  models): for each teacher crop's ``(B, K)`` outputs ``Q = exp(g_t / tau_t)``, normalised
  to total mass 1, then ``n_iters`` (3) times: each prototype column to ``1/K``, each sample
  row to ``1/B``; the codes are ``B * Q`` (rows sum to 1). Sums run over the global batch
  of every process (`deepclust.cluster.sinkhorn_knopp` with ``epsilon = tau_t``). With
  Sinkhorn no center is kept up to date.
* `koleo_per_crop`: ``sum over global crops v of KoLeo(normalise(cls_v))``: the nearest
  neighbour of an image is searched among the other images of the *same* crop, never its
  own other crop (DINOv2: ``sum(koleo(p) for p in student_cls_tokens.chunk(2))``), applied
  to the student backbone's [CLS] features, weight 0.1 in the method.

Shapes: as `DINOLoss`; ``koleo_per_crop(x (V*B, D), n_crops)`` crop-major. Scalars.
"""

from __future__ import annotations

import torch

from deepclust.cluster import sinkhorn_knopp
from deepclust.losses.dino import DINOLoss
from deepclust.losses.ibot import Centering
from deepclust.losses.koleo import KoLeoLoss


class DINOv2ClsLoss(DINOLoss):
    """`DINOLoss` with ``centering`` "center" (default) or "sinkhorn" (see module doc)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9,
                 centering: Centering = "center", sinkhorn_iters: int = 3):
        super().__init__(out_dim, student_temp, center_momentum)
        if centering not in ("center", "sinkhorn"):
            raise ValueError(f"centering must be 'center' or 'sinkhorn', got {centering!r}")
        self.centering = centering
        self.sinkhorn_iters = int(sinkhorn_iters)

    def teacher_probs(self, teacher_out: torch.Tensor, teacher_temp: float) -> torch.Tensor:
        if self.centering == "center":
            return super().teacher_probs(teacher_out, teacher_temp)
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}")
        with torch.no_grad():
            return sinkhorn_knopp(teacher_out.detach().float(), epsilon=teacher_temp, n_iters=self.sinkhorn_iters)

    def forward(self, student_out, teacher_out, *, teacher_temp: float,
                n_student_crops: int | None = None, n_teacher_crops: int | None = None,
                update_center: bool = True) -> torch.Tensor:
        return super().forward(student_out, teacher_out, teacher_temp=teacher_temp,
                               n_student_crops=n_student_crops, n_teacher_crops=n_teacher_crops,
                               update_center=update_center and self.centering == "center")


def koleo_per_crop(x: torch.Tensor, n_crops: int, koleo: KoLeoLoss | None = None) -> torch.Tensor:
    """``sum_v KoLeo(x_v)`` over the ``n_crops`` crop-major chunks of ``x (V*B, D)``."""
    if n_crops < 1 or x.shape[0] % n_crops:
        raise ValueError(f"{x.shape[0]} rows do not split into {n_crops} crops")
    koleo = koleo or KoLeoLoss()
    return torch.stack([koleo(chunk) for chunk in x.chunk(n_crops)]).sum()


__all__ = ["DINOv2ClsLoss", "koleo_per_crop"]
