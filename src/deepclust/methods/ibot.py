"""iBOT (Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, ICLR 2022, arXiv:2111.07832).

Image BERT pre-training with an online tokenizer: DINO's self-distillation on the [CLS]
token plus masked image modelling where the EMA teacher is the tokenizer.

* The student sees the global crops with block-wise masks (`deepclust.data.masking`, built in
  `collate` on each global crop's patch grid; local crops are never masked): masked patch
  embeddings are replaced by the ViT's learnable mask token (`VisionTransformer.enable_mask_token`,
  created on the trunk this method is given). The teacher sees the crops unmasked.
* Loss = ``lambda1 * L_cls + lambda2 * L_patch`` (1, 1), returned as the named terms
  ``"cls"`` and ``"patch"`` with those weights. ``L_cls`` is DINO's cross-view loss
  (`deepclust.losses.dinov2.DINOv2ClsLoss`, the moving-average center by default);
  ``L_patch`` (`deepclust.losses.ibot.iBOTPatchLoss`) compares, on each masked token, the
  student's and the teacher's patch distributions of the *same* view. Separate centers for
  [CLS] and patches (both momentum 0.9).
* Schedules from the loop (`StepState`): teacher momentum 0.996 -> 1 (cosine), [CLS] teacher
  temperature 0.04 -> 0.07 and patch teacher temperature 0.04 -> 0.07 (``teacher_patch_temp``)
  over ``warmup_teacher_temp_epochs``; the heads' last layers are frozen for the first epoch.
* ``shared_head`` (the published ViT-S/16 setting): one head projects both [CLS] and patch
  tokens; otherwise a separate patch head with ``patch_out_dim`` outputs. ``out_dim`` is 8192
  in the paper (CPU recipes use less).
* Masking: each global crop is unmasked, or masked at a ratio drawn from ``U(0.1, 0.5)``,
  with probability 1/2 each (``pred_ratio (0, 0.3)``, ``pred_ratio_var (0, 0.2)``).

Needs a ViT backbone (``vit_tiny``, ``vit_small``); evaluation uses the teacher backbone.
`deepclust.methods.dinov2.DINOv2` is the same machinery with DINOv2's choices.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from deepclust.data.masking import dinov2_masks, ibot_masks, torch_seeded_rng
from deepclust.losses.dinov2 import DINOv2ClsLoss, koleo_per_crop
from deepclust.losses.ibot import iBOTPatchLoss
from deepclust.losses.koleo import KoLeoLoss
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
from deepclust.models.encoder import BackboneEncoder, Encoder
from deepclust.models.heads import DINOHead


@dataclass
class iBOTConfig(TypedConfig):  # noqa: N801 -- the paper's name
    """iBOT's hyper-parameters (``method_kwargs``); defaults are the paper's ViT-S/16 recipe.

    out_dim: [CLS] head outputs (8192), or "k" for a k-way head (`cluster_head`).
    patch_out_dim: patch head outputs when ``shared_head`` is false (8192).
    shared_head: one head for [CLS] and patch tokens (true for ViT-S/16).
    hidden_dim, bottleneck_dim, n_layers, norm_last_layer, use_bn_in_head: ``DINOHead``.
    lambda1, lambda2: weights of the [CLS] and patch terms (1, 1).
    student_temp, center_momentum, center_momentum2: losses (0.1, 0.9, 0.9).
    warmup_teacher_temp -> teacher_temp, warmup_teacher_patch_temp -> teacher_patch_temp over
      warmup_teacher_temp_epochs (0.04 -> 0.07, 30 epochs); per iteration with
      ``teacher_temp_per_iteration``.
    momentum_teacher, momentum_teacher_end: EMA momentum cosine (0.996 -> 1).
    freeze_last_layer_epochs: epochs with the heads' last layers frozen (1).
    masking: "ibot" (per crop: ``pred_ratio`` +- ``pred_ratio_var``) or "dinov2" (exactly
      ``mask_probability`` of the global crops, ratios spread over ``mask_ratio_range``).
    min_mask_patches: smallest block (4 patches).
    centering: "center" (moving average) or "sinkhorn" (Sinkhorn-Knopp, ``sinkhorn_iters``).
    koleo_weight: KoLeo on each global crop's student [CLS] features (0 here; DINOv2 0.1).
    eval_pooling: the embedding `encoder` gives for clustering and k-NN (`BackboneEncoder`'s
      ``pooling``): "cls" (default), "mean" (mean patch token) or "cls+mean" (DINO's
      linear-evaluation feature: [CLS] and the mean patch token, concatenated); training is
      unchanged (the losses see the [CLS] and patch tokens themselves).
    augment: ``MultiCropAugment`` options (2 global + 10 local crops in the paper; 6 here).
    """

    out_dim: int | Literal["k"] = 8192
    patch_out_dim: int = 8192
    shared_head: bool = True
    hidden_dim: int = 2048
    bottleneck_dim: int = 256
    n_layers: int = 3
    norm_last_layer: bool = True
    use_bn_in_head: bool = False
    lambda1: float = 1.0
    lambda2: float = 1.0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    center_momentum2: float = 0.9
    warmup_teacher_temp: float = 0.04
    teacher_temp: float = 0.07
    warmup_teacher_patch_temp: float = 0.04
    teacher_patch_temp: float = 0.07
    warmup_teacher_temp_epochs: float = 30.0
    teacher_temp_per_iteration: bool = False
    momentum_teacher: float = 0.996
    momentum_teacher_end: float = 1.0
    freeze_last_layer_epochs: int = 1
    masking: Literal["ibot", "dinov2"] = "ibot"
    pred_ratio: tuple[float, ...] = (0.0, 0.3)
    pred_ratio_var: tuple[float, ...] = (0.0, 0.2)
    mask_probability: float = 0.5
    mask_ratio_range: tuple[float, float] = (0.1, 0.5)
    min_mask_patches: int = 4
    centering: Literal["center", "sinkhorn"] = "center"
    sinkhorn_iters: int = 3
    koleo_weight: float = 0.0
    eval_pooling: Literal["cls", "mean", "cls+mean"] = "cls"
    augment: dict[str, Any] | None = None


def _vit_trunk(backbone: nn.Module, method: str) -> Any:
    """The ViT inside ``backbone`` (an Encoder wraps it as ``trunk``), with a mask token."""
    trunk: Any = getattr(backbone, "trunk", backbone)
    if patch_size_of(backbone) is None or not hasattr(trunk, "enable_mask_token"):
        raise MethodConfigError(f"{method} masks patch tokens, so it needs a ViT backbone "
                                f"(vit_tiny, vit_small), got {type(trunk).__name__}")
    trunk.enable_mask_token()
    return trunk


class iBOT(Method):  # noqa: N801 -- the paper's name
    """[CLS] self-distillation + masked patch distillation (see module doc).

    Args: as `deepclust.methods.dino.DINO` (a ViT trunk or Encoder, a config, ``k``, ``img_size``).
    """

    name = "ibot"
    Config = iBOTConfig

    def __init__(self, backbone: nn.Module, config: iBOTConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: iBOTConfig = self.make_config(config, overrides)
        defaults = dict(n_global=2, global_size=img_size, global_scale=(0.4, 1.0), n_local=6,
                        local_size=default_local_size(img_size), local_scale=(0.05, 0.4))
        _vit_trunk(backbone, self.name)
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        self.config, self.views = cfg, views
        self._check(cfg, views)
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        out_dim = k if cfg.out_dim == "k" else cfg.out_dim
        if not isinstance(out_dim, int) or out_dim < 1:
            raise MethodConfigError(f"{self.name}: out_dim must be a positive int or 'k', got {cfg.out_dim!r}")
        patch_dim = out_dim if cfg.shared_head else cfg.patch_out_dim
        self.k, self.out_dim, self.patch_out_dim = int(k), out_dim, patch_dim
        self.grid = views.global_size // int(patch_size_of(backbone) or 1)
        self.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
        head_args = (cfg.hidden_dim, cfg.bottleneck_dim, cfg.n_layers, cfg.norm_last_layer, cfg.use_bn_in_head)
        self.head = DINOHead(embed_dim, out_dim, *head_args)
        self.patch_head = None if cfg.shared_head else DINOHead(embed_dim, patch_dim, *head_args)
        # The teacher starts as an exact copy and is only ever updated by EMA.
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_head = copy.deepcopy(self.head)
        self.teacher_patch_head = copy.deepcopy(self.patch_head)
        for p in self._teacher_parameters():
            p.requires_grad_(False)
        self.cls_loss = DINOv2ClsLoss(out_dim, cfg.student_temp, cfg.center_momentum, cfg.centering,
                                      cfg.sinkhorn_iters)
        self.patch_loss = iBOTPatchLoss(patch_dim, cfg.student_temp, cfg.center_momentum2, cfg.centering,
                                        cfg.sinkhorn_iters)
        self.koleo = KoLeoLoss()

    def _check(self, cfg: iBOTConfig, views: Any) -> None:
        if views.n_global < 1 or views.n_views < 2:
            raise MethodConfigError(f"{self.name} needs at least 2 views (e.g. 2 global crops)")
        if not 0.0 <= cfg.momentum_teacher <= cfg.momentum_teacher_end <= 1.0:
            raise MethodConfigError(f"{self.name}: need 0 <= momentum_teacher <= momentum_teacher_end <= 1")
        temps = (cfg.warmup_teacher_temp, cfg.teacher_temp, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp)
        if min(temps) <= 0:
            raise MethodConfigError(f"{self.name}: teacher temperatures must be > 0, got {temps}")
        if cfg.eval_pooling != "cls" and cfg.out_dim == "k":
            raise MethodConfigError(f"{self.name}: out_dim 'k' (a k-way head on [CLS]) needs eval_pooling 'cls', "
                                    f"got {cfg.eval_pooling!r}")
        if min(cfg.lambda1, cfg.lambda2, cfg.koleo_weight) < 0 or cfg.min_mask_patches < 1:
            raise MethodConfigError(f"{self.name}: lambda1, lambda2, koleo_weight must be >= 0 and "
                                    "min_mask_patches >= 1")

    def _teacher_parameters(self) -> list[nn.Parameter]:
        modules = [self.teacher_backbone, self.teacher_head, self.teacher_patch_head]
        return [p for m in modules if m is not None for p in m.parameters()]

    def _student_patch_head(self) -> nn.Module:
        return self.head if self.patch_head is None else self.patch_head

    def _teacher_patch_head(self) -> nn.Module:
        return self.teacher_head if self.teacher_patch_head is None else self.teacher_patch_head

    # --- a step ---------------------------------------------------------------------
    def make_masks(self, n: int) -> torch.Tensor:
        """``(n, grid*grid)`` bool masks for ``n`` global crops (the configured policy)."""
        c, rng = self.config, torch_seeded_rng()
        if c.masking == "dinov2":
            return dinov2_masks(n, self.grid, rng, mask_probability=c.mask_probability,
                                ratio_range=c.mask_ratio_range, min_patches=c.min_mask_patches)
        return ibot_masks(n, self.grid, rng, ratios=c.pred_ratio, ratio_vars=c.pred_ratio_var,
                          min_patches=c.min_mask_patches)

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """``{"crops": [G global, L local], "masks": (G*B, N) bool (crop-major), "index"}``."""
        crops = self.views(batch["images"])
        n_global = self.views.n_global
        masks = self.make_masks(n_global * crops[0].shape[0]).to(crops[0].device)
        return {"crops": crops, "masks": masks, "index": batch["index"]}

    def _heads(self, head: nn.Module, patch_head: nn.Module, tokens: dict[str, torch.Tensor]
               ) -> tuple[torch.Tensor, torch.Tensor]:
        patch = tokens["patch"]
        b, n, d = patch.shape
        return head(tokens["cls"]), patch_head(patch.reshape(b * n, d)).reshape(b, n, -1)

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        crops, masks, n_global = batch["crops"], batch["masks"], self.views.n_global
        globals_ = torch.cat(crops[:n_global])
        teacher, student = self.teacher_backbone, self.backbone
        assert isinstance(student, Encoder) and isinstance(teacher, Encoder)
        with torch.no_grad():
            t_cls, t_patch = self._heads(self.teacher_head, self._teacher_patch_head(),
                                         teacher.forward_tokens(globals_))
            used = self.cls_loss.center(t_cls.float()).argmax(dim=1).unique().numel()
        s_tokens = student.forward_tokens(globals_, masks)
        s_cls, s_patch = self._heads(self.head, self._student_patch_head(), s_tokens)
        if len(crops) > n_global:
            s_cls = torch.cat([s_cls, self.head(forward_by_resolution(self.backbone, crops[n_global:]))])
        cls = self.cls_loss(list(s_cls.chunk(len(crops))), list(t_cls.chunk(n_global)),
                            teacher_temp=state.teacher_temp)
        patch = self.patch_loss(s_patch, t_patch, masks, teacher_temp=state.teacher_patch_temp)
        terms = {"cls": cls, "patch": patch}
        weights = {"cls": self.config.lambda1, "patch": self.config.lambda2}
        if self.config.koleo_weight > 0:
            terms["koleo"] = koleo_per_crop(s_tokens["cls"], n_global, self.koleo)
            weights["koleo"] = self.config.koleo_weight
        logs: dict[str, torch.Tensor | float] = {
            "teacher_temp": state.teacher_temp, "teacher_patch_temp": state.teacher_patch_temp,
            "masked_fraction": float(masks.float().mean()), "teacher_dims_used": float(used)}
        return StepOutput(terms=terms, weights=weights, logs=logs)

    # --- loop hooks -----------------------------------------------------------------
    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs = [(self.teacher_backbone, self.backbone), (self.teacher_head, self.head)]
        if self.patch_head is not None and self.teacher_patch_head is not None:
            pairs.append((self.teacher_patch_head, self.patch_head))
        return pairs

    def teacher_schedule(self) -> TeacherSchedule:
        c = self.config
        return TeacherSchedule(momentum=c.momentum_teacher, momentum_end=c.momentum_teacher_end,
                               warmup_temp=c.warmup_teacher_temp, temp=c.teacher_temp,
                               warmup_epochs=c.warmup_teacher_temp_epochs,
                               per_iteration=c.teacher_temp_per_iteration,
                               patch_warmup_temp=c.warmup_teacher_patch_temp, patch_temp=c.teacher_patch_temp)

    def last_layer_parameters(self) -> list[nn.Parameter]:
        heads = [self.head] + ([self.patch_head] if self.patch_head is not None else [])
        return [p for h in heads for p in h.last_layer.parameters() if p.requires_grad]

    # --- inference ------------------------------------------------------------------
    def encoder(self) -> Encoder:
        """The teacher backbone (iBOT evaluates the teacher), pooled per ``eval_pooling``."""
        teacher = self.teacher_backbone
        assert isinstance(teacher, Encoder)
        if isinstance(teacher, BackboneEncoder):
            return teacher.with_pooling(self.config.eval_pooling)
        return teacher

    def cluster_head(self) -> nn.Module | None:
        """The teacher [CLS] head's centred ``(B, k)`` logits when ``out_dim == k``, else None."""
        if self.out_dim != self.k:
            return None
        return nn.Sequential(self.teacher_head, self.cls_loss.center)


__all__ = ["iBOT", "iBOTConfig"]
