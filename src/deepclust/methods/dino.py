"""DINO (Caron, Touvron, Misra, Jegou, Mairal, Bojanowski, Joulin, ICCV 2021, arXiv:2104.14294).

Self-distillation without labels: a student (backbone + ``DINOHead``) learns to match the
centred, sharpened output of a teacher that is an exponential moving average of the
student. The teacher sees only the global crops, the student every crop
(``deepclust.losses.dino.DINOLoss``). As in the reference code, with every per-step value
computed by the training loop and passed in `StepState`:

* the teacher momentum follows a cosine schedule 0.996 -> 1 over all steps (the loop
  updates the two `ema_pairs`),
* the head's last layer is frozen during the first epoch (``freeze_last_layer_epochs``;
  the loop clips each parameter's gradient first, then cancels the last layer's),
* the teacher temperature warms up 0.04 -> 0.07 over ``warmup_teacher_temp_epochs``
  (30 in the paper; scale it down for short runs), per epoch, or per iteration with
  ``teacher_temp_per_iteration`` (DINOv2),
* features for evaluation come from the *teacher* backbone (`encoder`).

With a ViT, crop sides are rounded to multiples of the patch size (a 14 px local crop
becomes 16 px for patch 4). A head with ``out_dim == k`` is a direct k-way clusterer
(`cluster_head`; ``out_dim: k`` sets it from ``k``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from deepclust.losses.dino import DINOLoss
from deepclust.methods.base import Method, StepOutput, StepState, TeacherSchedule
from deepclust.methods.common import (
    MethodConfigError,
    as_encoder,
    build_views,
    check_backbone,
    default_local_size,
    forward_by_resolution,
    patch_size_of,
)
from deepclust.methods.config import TypedConfig
from deepclust.models.encoder import Encoder
from deepclust.models.heads import DINOHead


@dataclass
class DINOConfig(TypedConfig):
    """DINO's hyper-parameters (``method_kwargs`` of a recipe); defaults are the paper's.

    out_dim: head outputs (65536 in the paper), or "k" for a k-way head.
    hidden_dim, bottleneck_dim, n_layers, norm_last_layer, use_bn_in_head: ``DINOHead``.
    student_temp, center_momentum: ``DINOLoss``.
    warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs: teacher temperature
      schedule; ``teacher_temp_per_iteration`` warms up per step (DINOv2) instead of per epoch.
    momentum_teacher, momentum_teacher_end: cosine EMA momentum schedule ends (0.996, 1).
    freeze_last_layer_epochs: epochs with the head's last layer frozen (1).
    augment: ``MultiCropAugment`` options over the defaults (2 global + 6 local crops).
    """

    out_dim: int | Literal["k"] = 65536
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    student_temp: float = 0.1
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_temp_epochs: float = 30.0
    teacher_temp_per_iteration: bool = False
    center_momentum: float = 0.9
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    freeze_last_layer_epochs: int = 1
    augment: dict[str, Any] | None = None


class DINO(Method):
    """Student/teacher self-distillation (see module doc).

    Args:
        backbone: a trunk (``embed_dim``; ``patch_size`` for ViTs) or an `Encoder`; the
            teacher is a deep copy.
        config: a `DINOConfig` (defaults if None); keyword overrides are checked against it.
        k: number of clusters wanted in the end. img_size: working size (global crops).
    """

    name = "dino"
    Config = DINOConfig

    def __init__(self, backbone: nn.Module, config: DINOConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: DINOConfig = self.make_config(config, overrides)
        defaults = dict(n_global=2, global_size=img_size, global_scale=(0.4, 1.0), n_local=6,
                        local_size=default_local_size(img_size), local_scale=(0.05, 0.4))
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        self.config, self.views = cfg, views
        if views.n_global < 1 or views.n_views < 2:
            raise MethodConfigError("dino needs at least 2 views (e.g. 2 global crops)")
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        out_dim = k if cfg.out_dim == "k" else cfg.out_dim
        if not isinstance(out_dim, int) or out_dim < 1:
            raise MethodConfigError(f"dino: out_dim must be a positive int or 'k', got {cfg.out_dim!r}")
        if not 0.0 <= cfg.momentum_teacher <= cfg.momentum_teacher_end <= 1.0:
            raise MethodConfigError("dino: need 0 <= momentum_teacher <= momentum_teacher_end <= 1, got "
                                    f"{cfg.momentum_teacher}, {cfg.momentum_teacher_end}")
        if min(cfg.warmup_teacher_temp, cfg.teacher_temp) <= 0:
            raise MethodConfigError("dino: teacher temperatures must be > 0")
        self.k, self.out_dim = int(k), out_dim
        self.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
        self.head = DINOHead(embed_dim, out_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers,
                             cfg.norm_last_layer, cfg.use_bn_in_head)
        # The teacher starts as an exact copy and is only ever updated by EMA.
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_head = copy.deepcopy(self.head)
        for p in list(self.teacher_backbone.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.loss_fn = DINOLoss(out_dim, cfg.student_temp, cfg.center_momentum)

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """``{"crops": [G global, L local] float views, "index"}``."""
        return {"crops": self.views(batch["images"]), "index": batch["index"]}

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        crops, n_global = batch["crops"], self.views.n_global
        with torch.no_grad():
            teacher_out = self.teacher_head(forward_by_resolution(self.teacher_backbone, crops[:n_global]))
            # dimensions the centred teacher targets pick (before the center moves): 1 = collapse
            used = self.loss_fn.center(teacher_out.float()).argmax(dim=1).unique().numel()
        student_out = self.head(forward_by_resolution(self.backbone, crops))
        loss = self.loss_fn(list(student_out.chunk(len(crops))), list(teacher_out.chunk(n_global)),
                            teacher_temp=state.teacher_temp)
        return StepOutput(terms={"dino": loss},
                          logs={"teacher_temp": state.teacher_temp, "teacher_dims_used": float(used)})

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]

    def teacher_schedule(self) -> TeacherSchedule:
        c = self.config
        return TeacherSchedule(momentum=c.momentum_teacher, momentum_end=c.momentum_teacher_end,
                               warmup_temp=c.warmup_teacher_temp, temp=c.teacher_temp,
                               warmup_epochs=c.warmup_teacher_temp_epochs,
                               per_iteration=c.teacher_temp_per_iteration)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.head.last_layer.parameters() if p.requires_grad]

    # --- inference ------------------------------------------------------------------
    def encoder(self) -> Encoder:
        """The teacher backbone (DINO evaluates the teacher)."""
        teacher = self.teacher_backbone
        assert isinstance(teacher, Encoder)
        return teacher

    def cluster_head(self) -> nn.Module | None:
        """The teacher head's centred ``(B, k)`` logits ``g_t - c`` when ``out_dim == k``, else
        None. Centred as in the loss's teacher targets: the raw logits share a common offset
        (that the center removes) which would put most images in one cluster."""
        if self.out_dim != self.k:
            return None
        return nn.Sequential(self.teacher_head, self.loss_fn.center)


__all__ = ["DINO", "DINOConfig"]
