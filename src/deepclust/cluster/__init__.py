"""Clustering of feature matrices: `cluster_embeddings` (the one clustering function, built
from the parts below), k-means (faiss / scikit-learn), SwAV's Sinkhorn-Knopp, balanced
assignment, DeepCluster's empty-cluster repair, PCA whitening, PCA / UMAP reduction, the
number of clusters from the data (silhouette) and HDBSCAN; clustering heads come from
`deepclust.heads`."""

from deepclust.cluster.api import CLUSTERERS, NOISE, Clustering, cluster_embeddings
from deepclust.cluster.auto_k import DEFAULT_K_RANGE, KChoice, choose_k, parse_k_range
from deepclust.cluster.kmeans import KMeansResult, assign_to_centroids, kmeans, l2_normalize
from deepclust.cluster.reduce import REDUCERS, Reduction, reduce_features
from deepclust.cluster.repair import repair_empty_clusters
from deepclust.cluster.sinkhorn import balanced_assign, sinkhorn_knopp
from deepclust.cluster.validation import InvalidInputError
from deepclust.cluster.whiten import Whitener, cluster_space, pca_whiten

__all__ = [
    "Clustering",
    "cluster_embeddings",
    "CLUSTERERS",
    "NOISE",
    "KChoice",
    "choose_k",
    "parse_k_range",
    "DEFAULT_K_RANGE",
    "REDUCERS",
    "Reduction",
    "reduce_features",
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
