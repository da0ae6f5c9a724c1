"""Clustering of feature matrices: k-means (faiss / scikit-learn), SwAV's Sinkhorn-Knopp,
balanced assignment and DeepCluster's empty-cluster repair."""

from deepclust.cluster.kmeans import KMeansResult, assign_to_centroids, kmeans, l2_normalize
from deepclust.cluster.repair import repair_empty_clusters
from deepclust.cluster.sinkhorn import balanced_assign, sinkhorn_knopp
from deepclust.cluster.validation import InvalidInputError

__all__ = [
    "KMeansResult",
    "kmeans",
    "assign_to_centroids",
    "l2_normalize",
    "repair_empty_clusters",
    "sinkhorn_knopp",
    "balanced_assign",
    "InvalidInputError",
]
