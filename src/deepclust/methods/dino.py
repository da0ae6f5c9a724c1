"""DINO (Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, ICCV 2021, arXiv:2104.14294).

Self-distillation without labels: a student (backbone + ``DINOHead``) learns to match the
centred, sharpened output of a teacher that is an exponential moving average of the
student. The teacher sees only the global crops, the student every crop
(``deepclust.losses.dino.DINOLoss``). As in the reference code:

* the teacher momentum follows a cosine schedule 0.996 -> 1 over all steps
  (``after_optimizer_step``),
* the head's last layer is frozen during the first epoch (``freeze_last_layer_epochs``),
* the teacher temperature warms up 0.04 -> 0.07 over ``warmup_teacher_temp_epochs``
  (30 in the paper; scale it down for short runs),
* features for evaluation come from the *teacher* backbone (``embed``), which is the
  better network at the end of training.

A head with ``out_dim == k`` is a direct k-way clusterer: ``cluster_logits`` returns the
teacher head's logits (``out_dim="k"`` sets it from ``k``).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepclust.losses.dino import DINOLoss
from deepclust.methods.base import Method
from deepclust.models.encoder import BackboneEncoder, Encoder
from deepclust.methods.common import (MethodConfigError, build_views, check_backbone,
                                      default_local_size, eval_transform_for, forward_by_resolution)
from deepclust.models.heads import DINOHead
from deepclust.train.context import TrainContext
from deepclust.core.ema import ema_update_
from deepclust.core.schedules import cosine_momentum_schedule


class DINO(Method):
    """Student/teacher self-distillation (see module doc).

    Args:
        backbone: features ``(B, 3, S, S) -> (B, embed_dim)``; the teacher is a deep copy.
        k: number of clusters wanted in the end.
        img_size: working image size (global crop size).
        out_dim: head outputs (65536 in the paper); an int, or "k" for a k-way head.
        hidden_dim, bottleneck_dim, n_layers, norm_last_layer, use_bn_in_head: ``DINOHead``.
        student_temp, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs,
        center_momentum: ``DINOLoss``.
        momentum_teacher, momentum_teacher_end: EMA momentum schedule ends (0.996, 1).
        augment: ``MultiCropAugment`` options over the defaults (2 global + 6 local crops).
    """

    name = "dino"
    freeze_last_layer_epochs = 1

    def __init__(self, backbone: nn.Module, *, k: int = 10, img_size: int = 32,
                 out_dim: int | str = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 n_layers: int = 3, norm_last_layer: bool = True, use_bn_in_head: bool = False,
                 student_temp: float = 0.1, warmup_teacher_temp: float = 0.04,
                 teacher_temp: float = 0.07, warmup_teacher_temp_epochs: float = 30,
                 center_momentum: float = 0.9, momentum_teacher: float = 0.996,
                 momentum_teacher_end: float = 1.0, augment: Mapping[str, Any] | None = None):
        super().__init__(backbone)
        defaults = dict(n_global=2, global_size=img_size, global_scale=(0.4, 1.0), n_local=6,
                        local_size=default_local_size(img_size), local_scale=(0.05, 0.4))
        self.views = build_views(defaults, augment)
        if self.views.n_global < 1 or self.views.n_views < 2:
            raise MethodConfigError("dino needs at least 2 views (e.g. 2 global crops)")
        self.eval_transform = eval_transform_for(self.views)
        embed_dim = check_backbone(backbone, in_chans=2 if self.views.sobel is not None else 3,
                                   method=self.name)
        if out_dim == "k":
            out_dim = k
        if not isinstance(out_dim, int) or out_dim < 1:
            raise MethodConfigError(f"dino: out_dim must be a positive int or 'k', got {out_dim!r}")
        if not 0.0 <= momentum_teacher <= momentum_teacher_end <= 1.0:
            raise MethodConfigError("dino: need 0 <= momentum_teacher <= momentum_teacher_end <= 1, got "
                                    f"{momentum_teacher}, {momentum_teacher_end}")
        self.k = int(k)
        self.out_dim = out_dim
        self.head = DINOHead(embed_dim, out_dim, hidden_dim, bottleneck_dim, n_layers,
                             norm_last_layer, use_bn_in_head)
        # The teacher starts as an exact copy and is only ever updated by EMA.
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = copy.deepcopy(self.head)
        for p in list(self.teacher_backbone.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.loss_fn = DINOLoss(out_dim, student_temp, warmup_teacher_temp, teacher_temp,
                                warmup_teacher_temp_epochs, center_momentum)
        self.momentum_teacher = float(momentum_teacher)
        self.momentum_teacher_end = float(momentum_teacher_end)

    def training_step(self, images: torch.Tensor, indices: torch.Tensor,
                      ctx: TrainContext) -> dict[str, torch.Tensor]:
        views = self.views(images)
        n_global = self.views.n_global
        with torch.no_grad():
            teacher_out = self.teacher_head(forward_by_resolution(self.teacher_backbone, views[:n_global]))
        student_out = self.head(forward_by_resolution(self.backbone, views))
        loss = self.loss_fn(list(student_out.chunk(len(views))), list(teacher_out.chunk(n_global)),
                            epoch=ctx.epoch)
        with torch.no_grad():  # dimensions the (centred) teacher targets pick: 1 = collapse
            used = (teacher_out.float() - self.loss_fn.center).argmax(dim=1).unique().numel()
        return {"loss": loss,
                "teacher_temp": torch.tensor(self.loss_fn.teacher_temperature(ctx.epoch)),
                "teacher_dims_used": torch.tensor(float(used))}

    def teacher_momentum(self, ctx: TrainContext) -> float:
        return float(cosine_momentum_schedule(self.momentum_teacher, self.momentum_teacher_end, ctx.total_steps)[min(ctx.step, ctx.total_steps - 1)])

    @torch.no_grad()
    def after_optimizer_step(self, ctx: TrainContext) -> None:
        m = self.teacher_momentum(ctx)
        ema_update_(self.teacher_backbone, self.backbone, m)
        ema_update_(self.teacher_head, self.head, m)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.last_layer.parameters() if p.requires_grad]

    # --- inference ------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.eval_transform(images)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Teacher backbone features (DINO evaluates the teacher)."""
        return self.teacher_backbone(x)

    def encoder(self) -> Encoder:
        """The teacher backbone (DINO evaluates the teacher)."""
        return BackboneEncoder(self.teacher_backbone, self.preprocess, name=self.name)

    def cluster_head(self) -> nn.Module | None:
        """The teacher head's centred ``(B, k)`` logits ``g_t - c`` when ``out_dim == k``, else
        None. Centred as in the loss's teacher targets: the raw logits share a common offset
        (that the center removes) which would put most images in one cluster."""
        if self.out_dim != self.k:
            return None
        return _CentredHead(self.teacher_head, self.loss_fn)


class _CentredHead(nn.Module):
    """``head(x) - center`` (a view on the method's modules, nothing of its own)."""

    def __init__(self, head: nn.Module, loss: DINOLoss):
        super().__init__()
        self.head, self.loss = head, loss

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head(x)
        return logits - self.loss.center.to(logits.dtype)


__all__ = ["DINO"]
