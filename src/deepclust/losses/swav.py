"""SwAV's swapped-prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features
by Contrasting Cluster Assignments", NeurIPS 2020 (arXiv:2006.09882), Sec. 3.1 and Alg. 1.

Every crop ``v`` of an image gives a unit feature ``z_v`` and prototype scores
``s_v = z_v C^T`` (``C`` the unit-norm prototypes). For each crop ``i`` used for assignment
(the global views) the *codes* ``q_i`` are computed without gradient by Sinkhorn-Knopp on
``s_i`` (equal use of the prototypes over the batch, ``deepclust.cluster.sinkhorn_knopp``),
optionally with the scores of a feature queue prepended so small batches still give
well-spread codes. Every *other* crop must predict them:

    p_j = softmax(s_j / tau)
    L = 1/|A| sum_{i in A} 1/(V-1) sum_{j != i} mean_b [ - sum_k q_i[b,k] log p_j[b,k] ]

with ``A`` the assignment crops, ``V`` the number of crops, ``tau = 0.1``.

Shapes: ``scores`` a list of ``V`` tensors ``(B, K)`` (or one ``(V*B, K)`` tensor, crop-major
as SwAV concatenates them), ``queue_scores`` an optional list (one per assignment crop) of
``(Q, K)`` scores of queued features. Returns a scalar.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.cluster import sinkhorn_knopp


class SwAVLoss(nn.Module):
    """Swapped prediction over multi-crop prototype scores (see module doc).

    Args:
        temperature: ``tau`` of the prediction softmax (0.1 in the paper).
        epsilon: Sinkhorn entropy regularisation (0.05).
        sinkhorn_iters: Sinkhorn iterations (3).
        crops_for_assign: indices of the crops whose codes are targets (the global views).
    """

    def __init__(self, temperature: float = 0.1, epsilon: float = 0.05, sinkhorn_iters: int = 3,
                 crops_for_assign: Sequence[int] = (0, 1)):
        super().__init__()
        if temperature <= 0 or epsilon <= 0:
            raise ValueError(f"temperature and epsilon must be > 0, got {temperature}, {epsilon}")
        self.temperature = float(temperature)
        self.epsilon = float(epsilon)
        self.sinkhorn_iters = int(sinkhorn_iters)
        self.crops_for_assign = tuple(int(c) for c in crops_for_assign)

    def codes(self, scores: torch.Tensor, queue_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Sinkhorn codes ``(B, K)`` for one crop's scores, the queue's scores prepended."""
        with torch.no_grad():
            s = scores.detach()
            if queue_scores is not None and queue_scores.numel():
                s = torch.cat([queue_scores.detach().to(s.dtype), s])
            q = sinkhorn_knopp(s, epsilon=self.epsilon, n_iters=self.sinkhorn_iters)
            return q[-scores.shape[0]:]

    def forward(self, scores: Sequence[torch.Tensor] | torch.Tensor, n_crops: int | None = None,
                queue_scores: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
        if isinstance(scores, torch.Tensor):
            if n_crops is None:
                raise ValueError("pass n_crops when scores is one (V*B, K) tensor")
            scores = list(scores.chunk(n_crops))
        n_views = len(scores)
        if n_views < 2:
            raise ValueError(f"SwAV needs at least 2 crops, got {n_views}")
        bad = [c for c in self.crops_for_assign if not 0 <= c < n_views]
        if bad:
            raise ValueError(f"crops_for_assign {self.crops_for_assign} refers to crops {bad}, "
                             f"but there are only {n_views}")
        total = scores[0].new_zeros(())
        for a, i in enumerate(self.crops_for_assign):
            queued = queue_scores[a] if queue_scores is not None else None
            q = self.codes(scores[i], queued)
            sub = scores[0].new_zeros(())
            for j in range(n_views):
                if j == i:
                    continue
                log_p = F.log_softmax(scores[j] / self.temperature, dim=1)
                sub = sub - (q * log_p).sum(dim=1).mean()
            total = total + sub / (n_views - 1)
        return total / len(self.crops_for_assign)


__all__ = ["SwAVLoss"]
