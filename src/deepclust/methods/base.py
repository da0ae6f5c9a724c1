"""The surface every self-supervised method implements for the one training loop.

A method is an encoder (its ``backbone``, a `deepclust.models.encoder.Encoder`) + heads +
losses + its own state. The loop (`deepclust.train.loop`) owns optimisation, every
schedule, AMP, EMA updates, checkpoints, logging, collapse monitoring and DDP; the method
says what a batch holds (`collate`), what a step computes (`training_step`: named, weighted
loss terms), which modules are EMA teachers of which (`ema_pairs`), what its schedules
are (`teacher_schedule`, ``freeze_last_layer_*``) and what happens per epoch.

Per step the loop does::

    batch = method.collate({"images": uint8 (B,S,S,3), "index": (B,)}, state)   # no grad
    out = method.training_step(batch, state)          # StepOutput(terms, weights, logs)
    loss = sum(out.weight(n) * t for n, t in out.terms.items()); loss.backward()
    clip each parameter's gradient; cancel last_layer_parameters() while state.freeze_last_layer
    optimizer.step(); ema_update_(teacher, student, state.teacher_momentum) for each ema pair
    method.after_optimizer_step(state)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from deepclust.methods.config import TypedConfig, config_from_mapping
from deepclust.methods.state import StepOutput, StepState, TrainContext
from deepclust.models.encoder import Encoder


@dataclass(frozen=True)
class TeacherSchedule:
    """What the loop needs to compute a teacher's per-step values (DINO's defaults).

    momentum: cosine ``momentum -> momentum_end`` over all steps.
    temp: ``warmup_temp -> temp`` over ``warmup_epochs`` (`core.schedules.teacher_temp_schedule`),
    indexed by epoch (DINO) or by iteration (``per_iteration``, DINOv2).
    patch_warmup_temp / patch_temp: the same warm-up for iBOT's patch-token teacher
    (`StepState.teacher_patch_temp`); None: the [CLS] values.
    """

    momentum: float = 0.996
    momentum_end: float = 1.0
    warmup_temp: float = 0.04
    temp: float = 0.07
    warmup_epochs: float = 30.0
    per_iteration: bool = False
    patch_warmup_temp: float | None = None
    patch_temp: float | None = None


class Method(nn.Module):
    """Base class. Sub-classes set `name` and ``Config`` and implement `training_step`.

    Attributes the loop reads:
      backbone: an `Encoder` (``preprocess`` + ``forward``) trained by the method.
      freeze_last_layer_epochs / freeze_last_layer_iters: the loop cancels the gradients
        of `last_layer_parameters()` while ``epoch < freeze_last_layer_epochs`` or
        ``step < freeze_last_layer_iters`` (DINO's head, SwAV's prototypes).
      ddp_find_unused_parameters: True for a method some of whose parameters a step may
        not use (none of ours).
    """

    name: str = "method"
    Config: ClassVar[type[TypedConfig]] = TypedConfig
    freeze_last_layer_epochs: int = 0
    freeze_last_layer_iters: int = 0
    ddp_find_unused_parameters: bool = False

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    @classmethod
    def make_config(cls, config: TypedConfig | None, overrides: dict[str, Any]) -> Any:
        """``config`` (or the defaults) updated with ``overrides``, keys and types checked."""
        base = {} if config is None else dict(vars(config))
        return config_from_mapping(cls.Config, {**base, **overrides}, where=f"method {cls.name!r}")

    # --- hooks called by the loop -------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        """Once before the first epoch (also after resuming)."""

    def on_epoch_start(self, ctx: TrainContext) -> None:
        """Start of each epoch; DeepCluster runs k-means here."""

    def epoch_indices(self, ctx: TrainContext) -> np.ndarray | None:
        """Sample order for this epoch (e.g. uniform over clusters), or None for a shuffle."""
        return None

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """Build what `training_step` needs from ``{"images": uint8 (B,S,S,3), "index": (B,)}``
        on the device (runs without gradients): crops, pseudo-labels, masks, neighbours,
        token ids. The default keeps the batch as it is."""
        return dict(batch)

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        """One step on a collated batch: named loss terms (with gradient), their weights and
        detached extras to log."""
        raise NotImplementedError

    def ema_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(teacher, student)`` pairs the loop updates by EMA after each optimiser step."""
        return []

    def teacher_schedule(self) -> TeacherSchedule | None:
        """The teacher momentum / temperature schedule settings, for methods with a teacher."""
        return None

    def after_optimizer_step(self, state: StepState) -> None:
        """After each optimiser step and EMA update (queues, statistics)."""

    # --- inference ---------------------------------------------------------------
    def encoder(self) -> Encoder:
        """The network whose embeddings are clustered and evaluated (the backbone)."""
        if not isinstance(self.backbone, Encoder):
            raise TypeError(f"{type(self).__name__}.backbone must be an Encoder")
        return self.backbone

    def cluster_head(self) -> nn.Module | None:
        """Maps `encoder` embeddings ``(B, D)`` to k-way cluster logits ``(B, k)`` when the
        method has such a head, else None."""
        return None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (B,S,S,3)`` -> the encoder's float input (its evaluation transform)."""
        return self.encoder().preprocess(images)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """`encoder` features of preprocessed ``x``: ``(B, D)``."""
        out: torch.Tensor = self.encoder()(x)
        return out

    def cluster_logits(self, x: torch.Tensor) -> torch.Tensor | None:
        """``(B, k)`` scores of the k-way head on preprocessed ``x``, if the method has one."""
        head = self.cluster_head()
        return None if head is None else head(self.embed(x))

    # --- optimisation details ----------------------------------------------------
    def last_layer_parameters(self) -> list[nn.Parameter]:
        return []

    def parameter_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """Biases and norm parameters get no weight decay (as in DINO/SwAV); teachers are
        excluded because they are not trained by gradients."""
        decay: list[nn.Parameter] = []
        no_decay: list[nn.Parameter] = []
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


__all__ = ["Method", "StepOutput", "StepState", "TeacherSchedule", "TrainContext"]
