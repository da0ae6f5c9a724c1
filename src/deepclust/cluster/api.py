"""`cluster_embeddings`: THE clustering function. Every entry point (``deepclust cluster``,
``deepclust train``, the demo, the estimator) turns embeddings into a `Clustering` here.

Steps, in order (DeepCluster's ``preprocess_features`` then k-means):

1. ``whiten_dim > 0``: PCA-whiten to ``whiten_dim`` dimensions and L2-normalise
   (`deepclust.cluster.whiten.Whitener`, fitted on ``x``); the space is then the sphere, so
   the k-means is spherical whatever ``spherical`` says;
2. else ``spherical``: L2-normalise and run cosine k-means; else Euclidean k-means on ``x``;
3. k-means (`deepclust.cluster.kmeans.kmeans`: faiss or scikit-learn, every point used, no
   empty cluster when there are at least k distinct rows; identical rows stay together);
4. ``balanced``: re-assign to the centroids with near-equal sizes (Sinkhorn,
   `deepclust.cluster.sinkhorn.balanced_assign`, cosine scores).

`Clustering.predict` applies the same transform and assigns new rows to the nearest
centroid, so ``predict(x)`` on the fitted rows gives back ``labels`` (unless balanced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepclust.cluster.kmeans import assign_to_centroids, kmeans, l2_normalize
from deepclust.cluster.sinkhorn import balanced_assign
from deepclust.cluster.validation import InvalidInputError, check_features
from deepclust.cluster.whiten import Whitener


@dataclass
class Clustering:
    """The outcome of `cluster_embeddings`.

    Attributes:
        labels: ``(N,)`` int64 cluster ids in ``[0, k)``.
        centroids: ``(k, d)`` float32 in the clustering space (whitened and/or unit length).
        whitener: the fitted PCA whitening, or None.
        spherical: True when the space is the unit sphere (cosine k-means).
        inertia: k-means objective in that space (sum of squared distances).
        n_empty_repaired: clusters that k-means left empty and that were repaired.
        balanced: labels come from the balanced (Sinkhorn) assignment.
    """

    labels: np.ndarray
    centroids: np.ndarray
    whitener: Whitener | None
    spherical: bool
    inertia: float
    n_empty_repaired: int
    balanced: bool = False

    @property
    def k(self) -> int:
        return int(len(self.centroids))

    @property
    def whiten_dim(self) -> int:
        """Dimensions after whitening (0: no whitening)."""
        return 0 if self.whitener is None else int(self.whitener.projection.shape[1])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` (N, D) in the clustering space ``(N, d)`` float32."""
        x = check_features(x, "x")
        expected = len(self.whitener.mean) if self.whitener is not None else self.centroids.shape[1]
        if x.shape[1] != expected:
            raise InvalidInputError(f"x has {x.shape[1]} features but this clustering was fitted on {expected}.")
        if self.whitener is not None:
            return self.whitener(x)
        return l2_normalize(x) if self.spherical else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Nearest centroid ``(N,)`` int64 of each row of ``x`` (same transform as the fit;
        with ``balanced`` the fitted rows may differ, since their labels were balanced)."""
        return assign_to_centroids(self.transform(x), self.centroids, spherical=self.spherical)

    def sizes(self) -> list[int]:
        return np.bincount(self.labels, minlength=self.k).astype(int).tolist()


def cluster_embeddings(
    x: np.ndarray,
    k: int,
    *,
    spherical: bool = True,
    whiten_dim: int = 0,
    n_init: int = 10,
    seed: int = 0,
    balanced: bool = False,
    max_iter: int = 100,
) -> Clustering:
    """Cluster the rows of ``x`` ``(N, D)`` into ``k`` groups (see the module doc for the steps).

    Args:
        x: embeddings, finite.
        k: clusters, ``1 <= k <= N``.
        spherical: cosine k-means on L2-normalised rows (learned embeddings) instead of
            Euclidean (pixels, PCA). Implied by ``whiten_dim > 0``.
        whiten_dim: PCA-whitening dimension (0: none); capped at ``min(D, N - 1)``.
        n_init, seed, max_iter: k-means restarts, seed and Lloyd iterations.
        balanced: near-equal cluster sizes (Sinkhorn assignment to the k-means centroids).

    Raises:
        InvalidInputError: bad ``x``, ``k`` or options.
    """
    x = check_features(x, "x")
    if isinstance(whiten_dim, bool) or not isinstance(whiten_dim, (int, np.integer)) or whiten_dim < 0:
        raise InvalidInputError(f"whiten_dim must be an integer >= 0 (0: no whitening), got {whiten_dim!r}.")
    whitener = Whitener.fit(x, int(whiten_dim)) if whiten_dim else None
    spherical = bool(spherical or whitener is not None)
    space = whitener(x) if whitener is not None else x
    result = kmeans(space, k, n_init=n_init, max_iter=max_iter, seed=seed, spherical=spherical)
    labels = np.asarray(result.labels, dtype=np.int64)
    if balanced:
        # Cosine scores even for Euclidean k-means: with -d^2 scores a tight, far-away cluster
        # gets codes of ~1e-9 toward the other centroids and Sinkhorn cannot rebalance it.
        labels = np.asarray(balanced_assign(l2_normalize(space), result.centroids), dtype=np.int64)
    return Clustering(labels=labels, centroids=result.centroids, whitener=whitener, spherical=spherical,
                      inertia=float(result.inertia), n_empty_repaired=int(result.n_empty_repaired),
                      balanced=bool(balanced))


__all__ = ["Clustering", "cluster_embeddings"]
