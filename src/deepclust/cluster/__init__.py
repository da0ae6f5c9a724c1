"""Clustering of feature matrices: `cluster_embeddings` (the one clustering function, built
from the parts below), k-means (faiss / scikit-learn), SwAV's Sinkhorn-Knopp, balanced
assignment, DeepCluster's empty-cluster repair and PCA whitening."""

from deepclust.cluster.api import Clustering, cluster_embeddings
from deepclust.cluster.kmeans import KMeansResult, assign_to_centroids, kmeans, l2_normalize
from deepclust.cluster.repair import repair_empty_clusters
from deepclust.cluster.sinkhorn import balanced_assign, sinkhorn_knopp
from deepclust.cluster.validation import InvalidInputError
from deepclust.cluster.whiten import Whitener, cluster_space, pca_whiten

__all__ = [
    "Clustering",
    "cluster_embeddings",
    "KMeansResult",
    "kmeans",
    "assign_to_centroids",
    "l2_normalize",
    "repair_empty_clusters",
    "sinkhorn_knopp",
    "balanced_assign",
    "InvalidInputError",
    "Whitener",
    "pca_whiten",
    "cluster_space",
]
