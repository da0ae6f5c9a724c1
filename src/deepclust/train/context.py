"""What the training loop tells a method about the run, step by step.

The loop owns one `TrainContext` and updates it in place; methods read it (never write
the loop's fields) so that per-step schedules such as DINO's teacher momentum or
temperature warm-up are a pure function of `step` / `epoch`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class TrainContext:
    epoch: int                      # current epoch, 0-based
    step: int                       # global optimisation step, 0-based
    steps_per_epoch: int
    total_epochs: int
    device: torch.device
    images: np.ndarray              # the whole store, uint8 (N, S, S, 3) (memmap) — DeepCluster embeds it
    labels: np.ndarray | None       # (N,) evaluation labels or None; never used for training
    batch_size: int                 # per-process batch size
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None   # autocast dtype in use, or None
    # Embed the whole store with the current backbone -> (N, D) float32; provided by the loop
    # (it knows batching, device, DDP sharding and progress bars).
    embed_all: Callable[[], np.ndarray] | None = None
    logs: dict[str, Any] = field(default_factory=dict)  # per-epoch extras a method wants logged

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.total_epochs

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]: drives cosine schedules."""
        return min(1.0, self.step / max(1, self.total_steps))
