"""KoLeo regulariser (Kozachenko-Leonenko differential entropy estimator).

Sablayrolles, Douze, Schmid, Jegou, "Spreading vectors for similarity search", ICLR 2019
(arXiv:1806.03198); used on the class tokens in DINOv2 (Oquab et al., 2023, Sec. 4).

On L2-normalised features ``x_1..x_n`` it pushes every point away from its nearest
neighbour, spreading the batch uniformly over the sphere. As in DINOv2's ``KoLeoLoss``:

    j(i) = argmax_{j != i} <x_i, x_j>              (the diagonal is set to -1)
    L_koleo = -1/n sum_i log( || x_i - x_j(i) + eps || + eps )

where ``|| a - b + eps ||`` is ``torch.nn.PairwiseDistance(p=2, eps=1e-8)``: the eps is
added to every coordinate of the difference, so duplicate rows give a distance of
``eps * sqrt(D)``, not 0. A batch of one row is its own neighbour (the only entry of the
similarity matrix is the -1 diagonal) and gives a finite loss, as in DINOv2.

Shapes: ``x (n, D)`` float, ``n >= 1``. Returns a scalar.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class KoLeoLoss(nn.Module):
    """``forward(x (n, D)) -> scalar`` (see module doc); ``eps = 1e-8`` as in DINOv2."""

    def __init__(self, eps: float = 1e-8):
        super().__init__()
        self.eps = float(eps)
        self.pdist = nn.PairwiseDistance(p=2, eps=self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[0] < 1:
            raise ValueError(f"KoLeo needs features (n >= 1, D), got {tuple(x.shape)}")
        x = F.normalize(x.float(), dim=1, p=2, eps=self.eps)
        with torch.no_grad():
            # Nearest neighbour by inner product (same order as distance on the sphere); the
            # gradient flows through the distance below only.
            dots = x @ x.t()
            dots.fill_diagonal_(-1.0)
            nn_idx = dots.argmax(dim=1)
        dist = self.pdist(x, x[nn_idx])
        return -torch.log(dist + self.eps).mean()


__all__ = ["KoLeoLoss"]
