"""What the training loop tells a method, and what a step gives back.

* `TrainContext`: the run, per epoch (store, device, rank, the embed-everything callback,
  per-epoch logs). The loop owns it; per-epoch hooks (`on_epoch_start`, `epoch_indices`)
  read it.
* `StepState`: this step's values, every schedule already evaluated by the loop (lr, weight
  decay, teacher momentum and temperature, last-layer freeze). `collate` and
  `training_step` read it; losses get the values as arguments, never an epoch.
* `StepOutput`: the named loss terms of a step and their weights; the loop minimises
  ``sum_name weights[name] * terms[name]`` and logs every term, the total and ``logs``.

These live with the methods (not in ``train/``) because methods import them and the loop
imports methods, never the other way round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn


@dataclass
class TrainContext:
    """The run as a method's per-epoch hooks see it (the loop updates ``epoch``/``step``)."""

    epoch: int                      # current epoch, 0-based
    step: int                       # global optimisation step, 0-based
    steps_per_epoch: int
    total_epochs: int
    device: torch.device
    images: np.ndarray              # the whole store, uint8 (N, S, S, 3) (memmap) -- DeepCluster embeds it
    labels: np.ndarray | None       # (N,) evaluation labels or None; never used for training
    batch_size: int                 # per-process batch size
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None   # autocast dtype in use, or None
    # Embed the whole store with the method's encoder -> (N, D) float32, identical on every
    # process; provided by the loop (it knows batching, device, DDP sharding, progress bars).
    embed_all: Callable[[], np.ndarray] | None = None
    logs: dict[str, Any] = field(default_factory=dict)  # per-epoch extras a method wants logged
    # Parameters a method re-initialised this epoch (DeepCluster's classifier): the loop
    # drops their optimiser state (momentum, Adam moments), as a freshly built optimiser would.
    reinitialized: list[nn.Parameter] = field(default_factory=list)
    # The store given to train() as it is (image-text methods read its captions: a
    # deepclust.data.pairs.PairStore); None when the loop is driven without one.
    store: Any = None

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs


@dataclass(frozen=True)
class StepState:
    """This step's scheduled values (computed by the loop from `deepclust.core.schedules`)."""

    epoch: int
    step: int                        # global step, 0-based
    steps_per_epoch: int = 1
    total_epochs: int = 1
    lr: float = 0.0
    weight_decay: float = 0.0
    teacher_momentum: float = 1.0    # EMA momentum of the teacher pairs (1: frozen)
    teacher_temp: float = 0.04       # teacher softmax temperature (DINO, iBOT, DINOv2)
    teacher_patch_temp: float = 0.04  # patch-token teacher temperature (iBOT, DINOv2)
    freeze_last_layer: bool = False  # the last layer's gradients are cancelled this step

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs


@dataclass
class StepOutput:
    """Named loss terms (scalars with gradient), their weights (default 1) and logged extras.

    The objective is ``sum(weights.get(name, 1) * term)``; `loss` computes it.
    """

    terms: dict[str, torch.Tensor]
    weights: dict[str, float] = field(default_factory=dict)
    logs: dict[str, torch.Tensor | float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.terms:
            raise ValueError("a training step must return at least one loss term")
        unknown = sorted(set(self.weights) - set(self.terms))
        if unknown:
            raise ValueError(f"weights given for terms that do not exist: {unknown}")

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    @property
    def loss(self) -> torch.Tensor:
        """The weighted sum of the terms."""
        total: torch.Tensor | None = None
        for name, term in self.terms.items():
            part = term * self.weight(name)
            total = part if total is None else total + part
        assert total is not None
        return total


__all__ = ["StepOutput", "StepState", "TrainContext"]
