"""``H`` clustering heads trained at once on the same features: one batched module.

Each head maps a feature ``(D,)`` to ``K`` logits: linear (SCAN's ``cluster_head``, an
``nn.Linear(D, K)`` per head) or, with ``hidden_dim > 0``, a two-layer MLP (Linear, GELU,
Linear), the cheap form of TEMI's head on frozen embeddings. With ``cosine`` the last layer
is DINO/TEMI's: the (hidden) feature and every cluster's weight vector are L2-normalised, so
logits are cosine similarities in [-1, 1] that the temperatures then sharpen (no bias). Weights
are stacked ``(H, ...)`` so that all heads run as one batched matrix product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _init(h: int, fan_in: int, fan_out: int, gen: torch.Generator) -> tuple[nn.Parameter, nn.Parameter]:
    bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default uniform range
    weight = (torch.rand(h, fan_in, fan_out, generator=gen) * 2 - 1) * bound
    bias = (torch.rand(h, fan_out, generator=gen) * 2 - 1) * bound
    return nn.Parameter(weight), nn.Parameter(bias)


class MultiHead(nn.Module):
    """``n_heads`` independent heads ``(B, D) -> (H, B, K)``.

    Args:
        in_dim: ``D``; n_clusters: ``K``; n_heads: ``H``.
        hidden_dim: 0 for linear heads, else the MLP's hidden width.
        cosine: cosine-similarity logits (TEMI's normalised last layer) instead of affine ones.
        seed: initialisation seed (each head starts from different weights).
    """

    def __init__(self, in_dim: int, n_clusters: int, n_heads: int = 1, *, hidden_dim: int = 0,
                 cosine: bool = False, seed: int = 0):
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.in_dim, self.n_clusters, self.n_heads, self.hidden_dim = in_dim, n_clusters, n_heads, hidden_dim
        self.cosine = bool(cosine)
        if hidden_dim:
            self.w1, self.b1 = _init(n_heads, in_dim, hidden_dim, gen)
            self.w2, self.b2 = _init(n_heads, hidden_dim, n_clusters, gen)
        else:
            self.w2, self.b2 = _init(n_heads, in_dim, n_clusters, gen)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``(B, D)`` -> logits ``(H, B, K)``."""
        h = x.unsqueeze(0).expand(self.n_heads, -1, -1)
        if self.hidden_dim:
            h = F.gelu(torch.baddbmm(self.b1.unsqueeze(1), h, self.w1))
        if self.cosine:
            return torch.bmm(F.normalize(h, dim=-1), F.normalize(self.w2, dim=1))
        return torch.baddbmm(self.b2.unsqueeze(1), h, self.w2)

    def select(self, head: int) -> MultiHead:
        """A one-head copy of head ``head`` (detached from this module's parameters)."""
        out = MultiHead(self.in_dim, self.n_clusters, 1, hidden_dim=self.hidden_dim, cosine=self.cosine)
        with torch.no_grad():
            for name, param in out.named_parameters():
                param.copy_(getattr(self, name)[head:head + 1])
        return out


__all__ = ["MultiHead"]
