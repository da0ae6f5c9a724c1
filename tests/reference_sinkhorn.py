"""SwAV's Sinkhorn-Knopp (Caron et al. 2020, Algorithm 1) written out with plain Python
loops: no vectorisation, no numerical stabilisation. The reference that both the
clustering code's `sinkhorn_knopp` and the SwAV loss's codes are checked against."""

from __future__ import annotations

import math

import torch


def naive_swav_sinkhorn(scores, eps: float, n_iters: int) -> torch.Tensor:
    """Scores (B, K) (a tensor or nested lists) -> codes (B, K) float64, rows summing to 1."""
    rows = scores.tolist() if isinstance(scores, torch.Tensor) else scores
    n_samples, n_protos = len(rows), len(rows[0])
    q = [[math.exp(float(rows[b][k]) / eps) for b in range(n_samples)] for k in range(n_protos)]  # K x B
    total = sum(sum(row) for row in q)
    q = [[v / total for v in row] for row in q]
    for _ in range(n_iters):
        for k in range(n_protos):  # each prototype gets 1/K of the mass
            row_sum = sum(q[k])
            q[k] = [v / row_sum / n_protos for v in q[k]]
        for b in range(n_samples):  # each sample gets 1/B of the mass
            col_sum = sum(q[k][b] for k in range(n_protos))
            for k in range(n_protos):
                q[k][b] = q[k][b] / col_sum / n_samples
    return torch.tensor([[q[k][b] * n_samples for k in range(n_protos)] for b in range(n_samples)],
                        dtype=torch.float64)
