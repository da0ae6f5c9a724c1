"""A running center of a network's outputs, shared by every process.

DINO (Caron et al., ICCV 2021, arXiv:2104.14294, Sec. 3.1) subtracts a center ``c`` from
the teacher's outputs before the sharpening softmax so that no single dimension dominates;
after each step the center moves towards the mean of the batch:

    c <- m c + (1 - m) * (sum over every process' batch of x) / (global number of rows)

(``m = 0.9``). The column sums and the row count are all-reduced in one collective, so
every process holds the same center and unequal per-process batches count row by row.
iBOT and DINOv2 (patch-token centers) reuse the same unit.

Shapes: ``x (N, K)``; the center is a buffer ``(1, K)`` (``value``).
"""

from __future__ import annotations

import torch
from torch import nn

from deepclust.core.distributed import all_reduce_sum


class Center(nn.Module):
    """``value (1, K)``, updated by `update` with momentum ``momentum`` (see module doc)."""

    value: torch.Tensor

    def __init__(self, size: int, momentum: float = 0.9):
        super().__init__()
        if size < 1:
            raise ValueError(f"Center size must be >= 1, got {size}")
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"center momentum must be in [0, 1], got {momentum}")
        self.momentum = float(momentum)
        self.register_buffer("value", torch.zeros(1, int(size)))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """``c <- m c + (1 - m) * global row mean of x (N, K)`` (all processes)."""
        t = x.detach().float().reshape(-1, self.value.shape[1])
        stats = all_reduce_sum(torch.cat([t.sum(dim=0), t.new_tensor([t.shape[0]])]))
        batch_mean = (stats[:-1] / stats[-1].clamp(min=1)).unsqueeze(0)
        self.value.mul_(self.momentum).add_(batch_mean * (1.0 - self.momentum))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x - c`` (in ``x``'s dtype)."""
        return x - self.value.to(x.dtype)


__all__ = ["Center"]
