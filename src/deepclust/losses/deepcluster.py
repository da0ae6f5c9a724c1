"""DeepCluster's classification loss on k-means pseudo-labels.

Caron, Bojanowski, Joulin, Douze, "Deep Clustering for Unsupervised Learning of Visual
Features", ECCV 2018 (arXiv:1807.05520), Sec. 3.2-3.3.

Each epoch the features are clustered with k-means; the cluster index ``y_n`` of image
``n`` becomes its pseudo-label and the network (backbone + a freshly initialised linear
classifier ``g_W``) is trained with the cross-entropy

    L = sum_n w_{y_n} * ( -log softmax(g_W(f(x_n)))_{y_n} ) / sum_n w_{y_n}

With uniform weights this is the plain mean cross-entropy. k-means clusters can be very
unequal in size; the paper avoids the resulting trivial parametrisation by sampling images
uniformly over the clusters (``DeepCluster.epoch_indices``), or, equivalently in
expectation, "weighting the contribution of an input to the loss function by the inverse
of the size of its assigned cluster" -- ``inverse_size_weights`` gives those weights.

Shapes: ``logits (B, K)`` float, ``pseudo_labels (B,)`` int64 in ``[0, K)``,
``class_weights (K,)`` float or None. Returns a scalar.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def inverse_size_weights(labels: np.ndarray | torch.Tensor, k: int) -> torch.Tensor:
    """``w_c = N / (K_used * |c|)`` for each non-empty cluster ``c`` (0 for empty ones).

    Normalised so the weighted average over the data set equals the plain average when all
    clusters have the same size. Returns float32 ``(k,)``.
    """
    labels_t = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    counts = torch.bincount(labels_t, minlength=k).to(torch.float32)
    used = (counts > 0).sum().clamp(min=1)
    weights = torch.where(counts > 0, labels_t.numel() / (used * counts.clamp(min=1)), torch.zeros_like(counts))
    return weights


class DeepClusterLoss(nn.Module):
    """Cross-entropy on pseudo-labels, optionally weighted by ``class_weights`` (see module doc).

    ``forward(logits (B, K), pseudo_labels (B,), class_weights (K,) | None) -> scalar``.
    """

    def forward(self, logits: torch.Tensor, pseudo_labels: torch.Tensor,
                class_weights: torch.Tensor | None = None) -> torch.Tensor:
        if logits.ndim != 2 or pseudo_labels.shape != logits.shape[:1]:
            raise ValueError(f"expected logits (B, K) and pseudo_labels (B,), got "
                             f"{tuple(logits.shape)} and {tuple(pseudo_labels.shape)}")
        if class_weights is not None:
            class_weights = class_weights.to(device=logits.device, dtype=logits.dtype)
        # F.cross_entropy's weighted "mean" divides by sum_n w_{y_n}: exactly the formula above.
        return F.cross_entropy(logits, pseudo_labels.long(), weight=class_weights)


__all__ = ["DeepClusterLoss", "inverse_size_weights"]
