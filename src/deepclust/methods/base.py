"""The surface every self-supervised method implements for the one training loop.

A method is backbone + head + loss + its own state. The loop (deepclust.train.loop)
owns optimisation, schedules, AMP, checkpoints, logging, collapse monitoring and DDP;
the method only says what to compute per step and per epoch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from deepclust.models.encoder import BackboneEncoder, Encoder
from deepclust.train.context import TrainContext


class Method(nn.Module):
    """Base class. Sub-classes set `name` and implement `training_step` and `embed`.

    Attributes the loop reads:
      backbone: nn.Module with `embed_dim`, mapping float (B,3,S,S) -> (B, embed_dim).
      freeze_last_layer_epochs: the loop zeroes gradients of `last_layer_parameters()`
        while `epoch < freeze_last_layer_epochs` (DINO, SwAV prototypes).
    """

    name: str = "method"
    freeze_last_layer_epochs: int = 0

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    # --- hooks called by the loop -------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        """Once before the first epoch (also after resuming)."""

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Start of each epoch; DeepCluster runs k-means here."""

    def epoch_indices(self, ctx: TrainContext) -> np.ndarray | None:
        """Sample order for this epoch (e.g. uniform over clusters), or None for a shuffle."""
        return None

    def training_step(
        self, images: torch.Tensor, indices: torch.Tensor, ctx: TrainContext
    ) -> dict[str, torch.Tensor]:
        """One step on a uint8 (B,S,S,3) batch on the device. Must return {"loss": scalar, ...};
        other entries (detached scalars) are logged."""
        raise NotImplementedError

    def after_optimizer_step(self, ctx: TrainContext) -> None:
        """After each optimiser step; DINO's EMA teacher update goes here."""

    # --- inference ---------------------------------------------------------------
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features for clustering/evaluation: float (B,3,S,S) normalised -> (B,D)."""
        return self.backbone(x)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B,S,S,3) -> the float input `embed` expects (no augmentation)."""
        raise NotImplementedError

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B,k) scores of a head with one output per cluster, if the method has one."""
        head = self.cluster_head()
        return None if head is None else head(self.encoder()(x))

    def encoder(self) -> Encoder:
        """The network whose embeddings are clustered and evaluated, as an `Encoder`
        (``preprocess`` = the method's evaluation transform)."""
        return BackboneEncoder(self.backbone, self.preprocess, name=self.name)

    def cluster_head(self) -> nn.Module | None:
        """Maps `encoder` embeddings ``(B, D)`` to k-way cluster logits ``(B, k)`` when the
        method has such a head, else None."""
        return None

    # --- optimisation details ----------------------------------------------------
    def last_layer_parameters(self) -> list[nn.Parameter]:
        return []

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Biases and norm parameters get no weight decay (as in DINO/SwAV); teachers are
        excluded because they are not trained by gradients."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    # --- non-parameter state for checkpoints -------------------------------------
    def state_extra(self) -> dict[str, Any]:
        """JSON-able or tensor state that is not in state_dict (queues are buffers, so
        usually nothing); tensors here are saved with safetensors."""
        return {}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        pass
