"""Clustering heads on cached embeddings: SCAN (+ self-labelling) and TEMI, neighbour mining.

This unit sits in the clustering layer and imports only `deepclust.core` and
`deepclust.errors`: `deepclust.cluster.cluster_embeddings(x, k, head="scan")` calls
`train_heads`, so heads never import `deepclust.cluster` (that would be a cycle).
"""

from deepclust.heads.losses import (
    beta_pmi,
    class_balance_weights,
    entropy_of_mean,
    scan_loss,
    self_label_loss,
    self_label_targets,
    temi_loss,
    update_marginal,
)
from deepclust.heads.module import MultiHead
from deepclust.heads.neighbours import mine_neighbours, neighbour_purity
from deepclust.heads.train import HEAD_KINDS, HeadConfig, HeadConfigError, HeadResult, train_heads

__all__ = [
    "HEAD_KINDS", "HeadConfig", "HeadConfigError", "HeadResult", "train_heads", "MultiHead",
    "mine_neighbours", "neighbour_purity", "scan_loss", "entropy_of_mean", "self_label_targets",
    "class_balance_weights", "self_label_loss", "beta_pmi", "temi_loss", "update_marginal",
]
