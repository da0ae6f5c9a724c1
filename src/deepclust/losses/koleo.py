"""KoLeo regulariser (Kozachenko-Leonenko differential entropy estimator).

Sablayrolles, Douze, Schmid, Jegou, "Spreading vectors for similarity search", ICLR 2019
(arXiv:1806.03198); used on the class tokens in DINOv2 (Oquab et al., 2023, Sec. 4).

On L2-normalised features ``x_1..x_n`` it pushes every point away from its nearest
neighbour, spreading the batch uniformly over the sphere:

    L_koleo = -1/n sum_i log( min_{j != i} || x_i - x_j || + eps )

Shapes: ``x (n, D)`` float with ``n >= 2``. Returns a scalar.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class KoLeoLoss(nn.Module):
    """``forward(x (n, D)) -> scalar``; ``eps`` keeps ``log`` finite for duplicate rows."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"KoLeo needs features (n >= 2, D), got {tuple(x.shape)}")
        x = F.normalize(x, dim=1, p=2, eps=self.eps)
        with torch.no_grad():
            # Nearest neighbour by inner product (same order as distance on the sphere),
            # the diagonal excluded; the gradient flows through the distance below only.
            sim = x @ x.t()
            sim.fill_diagonal_(-float("inf"))
            nn_idx = sim.argmax(dim=1)
        dist = (x - x[nn_idx]).norm(dim=1)
        return -torch.log(dist + self.eps).mean()


__all__ = ["KoLeoLoss"]
