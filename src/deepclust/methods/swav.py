"""SwAV (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020, arXiv:2006.09882).

backbone -> MLP projector -> L2-normalise -> prototypes (unit rows) gives prototype scores
for every multi-crop view; the Sinkhorn codes of each global view are predicted from every
other view (``deepclust.losses.swav.SwAVLoss``). As in the reference code:

* the prototypes are L2-normalised before every step,
* their gradients are cancelled (``p.grad = None``, by the loop) for the first
  ``freeze_prototypes_niters`` iterations,
* an optional queue of past projections (``queue_length`` per process, filled from epoch
  ``epoch_queue_starts``) is prepended to the Sinkhorn input so small batches still
  spread the codes over many prototypes.

For ``k``-way clustering the final answer normally comes from k-means on the embeddings;
when ``n_prototypes == k`` the prototype scores are also a direct k-way head
(`cluster_head`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.losses.swav import SwAVLoss
from deepclust.methods.base import Method, StepOutput, StepState
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
from deepclust.models.heads import MLPProjector, Prototypes


@dataclass
class SwAVConfig(TypedConfig):
    """SwAV's hyper-parameters (``method_kwargs`` of a recipe); defaults are the paper's.

    n_prototypes: 3000 in the paper (ImageNet); about 10x the number of classes is typical.
    hidden_dim, out_dim, n_proj_layers, proj_bn: projector MLP (2048, 128, 2, BN).
    temperature, epsilon, sinkhorn_iters: 0.1, 0.05, 3 as in the paper.
    crops_for_assign: views whose codes are targets (the two global views).
    freeze_prototypes_niters: steps with frozen prototypes (313 in the reference code).
    queue_length, epoch_queue_starts: feature queue per process (0 = none).
    augment: ``MultiCropAugment`` options over the defaults (2 global + 4 local crops).
    """

    n_prototypes: int = 3000
    hidden_dim: int = 2048
    out_dim: int = 128
    n_proj_layers: int = 2
    proj_bn: bool = True
    temperature: float = 0.1
    epsilon: float = 0.05
    sinkhorn_iters: int = 3
    crops_for_assign: tuple[int, ...] = (0, 1)
    freeze_prototypes_niters: int = 313
    queue_length: int = 0
    epoch_queue_starts: int = 15
    augment: dict[str, Any] | None = None


class SwAV(Method):
    """Swapped prediction of Sinkhorn codes between multi-crop views (see module doc).

    Args:
        backbone: a trunk (``embed_dim``) or an `Encoder`.
        config: a `SwAVConfig` (defaults if None); keyword overrides are checked against it.
        k: number of clusters wanted in the end (`cluster_head` when ``n_prototypes == k``).
        img_size: working image size (global crop size).
    """

    name = "swav"
    Config = SwAVConfig
    queue: torch.Tensor

    def __init__(self, backbone: nn.Module, config: SwAVConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: SwAVConfig = self.make_config(config, overrides)
        defaults = dict(n_global=2, global_size=img_size, global_scale=(0.14, 1.0), n_local=4,
                        local_size=default_local_size(img_size), local_scale=(0.05, 0.14),
                        blur_p=0.5, local_blur_p=0.5, solarize_p=0.0)
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        self.config, self.views = cfg, views
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        crops_for_assign = cfg.crops_for_assign
        if max(crops_for_assign, default=-1) >= views.n_views or not crops_for_assign:
            raise MethodConfigError(f"swav: crops_for_assign {tuple(crops_for_assign)} must index "
                                    f"the {views.n_views} views")
        if cfg.queue_length < 0:
            raise MethodConfigError(f"swav: queue_length must be >= 0, got {cfg.queue_length}")
        self.k = int(k)
        self.projector = MLPProjector(embed_dim, cfg.hidden_dim, cfg.out_dim, cfg.n_proj_layers, cfg.proj_bn)
        self.prototypes = Prototypes(cfg.out_dim, cfg.n_prototypes)
        self.loss_fn = SwAVLoss(cfg.temperature, cfg.epsilon, cfg.sinkhorn_iters, crops_for_assign)
        # The loop cancels the prototypes' gradients (p.grad = None, as SwAV's reference code
        # does) for the first freeze_prototypes_niters steps.
        self.freeze_last_layer_iters = cfg.freeze_prototypes_niters
        self.epoch_queue_starts = cfg.epoch_queue_starts
        # Queue of past projections, one per assignment crop (a buffer: checkpointed).
        self.register_buffer("queue", torch.zeros(len(crops_for_assign), cfg.queue_length, cfg.out_dim))

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm projections ``(B, out_dim)`` of backbone features ``(B, embed_dim)``."""
        return F.normalize(self.projector(x), dim=1, p=2)

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """``{"crops": [G global, L local] float views, "index"}``."""
        return {"crops": self.views(batch["images"]), "index": batch["index"]}

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        self.prototypes.normalize_()
        crops = batch["crops"]
        n = crops[0].shape[0]
        z = self.project(forward_by_resolution(self.backbone, crops))
        scores = self.prototypes(z)
        queue_scores = self._queue_scores(state.epoch)
        loss = self.loss_fn(list(scores.chunk(len(crops))), queue_scores=queue_scores)
        self._push_to_queue(z.detach(), n, state.epoch)
        with torch.no_grad():
            used = scores[:n].argmax(dim=1).unique().numel()
        return StepOutput(terms={"swav": loss}, logs={"prototypes_used": float(used)})

    def _queue_active(self, epoch: int) -> bool:
        return self.queue.shape[1] > 0 and epoch >= self.epoch_queue_starts

    def _queue_scores(self, epoch: int) -> list[torch.Tensor | None] | None:
        """Scores of the queued features under the *current* prototypes, once the queue is full."""
        if not self._queue_active(epoch) or not torch.any(self.queue[:, -1] != 0):
            return None
        with torch.no_grad():
            return [self.prototypes(q) for q in self.queue]

    @torch.no_grad()
    def _push_to_queue(self, z: torch.Tensor, batch: int, epoch: int) -> None:
        if not self._queue_active(epoch):
            return
        n = min(batch, self.queue.shape[1])
        for a, crop in enumerate(self.loss_fn.crops_for_assign):
            new = z[crop * batch: crop * batch + n].to(self.queue.dtype)
            self.queue[a] = torch.cat([new, self.queue[a, :-n]]) if n < self.queue.shape[1] else new

    def last_layer_parameters(self) -> list[nn.Parameter]:
        return list(self.prototypes.parameters())

    def cluster_head(self) -> nn.Module | None:
        """Cosine scores to the (normalised) prototypes when there are exactly ``k`` of them."""
        if self.prototypes.n_prototypes != self.k:
            return None
        return _PrototypeScores(self)


class _PrototypeScores(nn.Module):
    """Backbone features -> cosine scores to SwAV's normalised prototypes ``(B, K)``."""

    def __init__(self, swav: SwAV):
        super().__init__()
        self.projector, self.prototypes = swav.projector, swav.prototypes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.projector(x), dim=1, p=2)
        return z @ F.normalize(self.prototypes.weight, dim=1).t()


__all__ = ["SwAV", "SwAVConfig"]
