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

Options (all off by default, so the default is the k-means above):

- ``reduce="pca"|"umap"``: reduce that space first (`deepclust.cluster.reduce`); k-means,
  HDBSCAN, the heads and the auto-k criterion all run in the reduced space;
- ``k="auto"``: choose k in ``k_range`` by the silhouette score (`deepclust.cluster.auto_k`);
- ``clusterer="hdbscan"``: scikit-learn's HDBSCAN instead of k-means (k is found by it, so
  pass ``k=None``); points it leaves out get the noise label ``-1`` (`NOISE`);
- ``head="scan"|"temi"``: train clustering heads on the space (`deepclust.heads.train_heads`,
  SCAN + optional self-labelling, or TEMI) and take the kept head's argmax as labels.

`Clustering.predict` applies the same transform and assigns new rows to the nearest
centroid (the head's argmax with a head; HDBSCAN: the nearest centroid of its clusters,
never noise), so ``predict(x)`` on the fitted rows gives back ``labels`` (unless balanced,
or HDBSCAN: its labels are density-based).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from deepclust.cluster.auto_k import KChoice, choose_k
from deepclust.cluster.kmeans import assign_to_centroids, kmeans, l2_normalize
from deepclust.cluster.reduce import Reduction, reduce_features
from deepclust.cluster.sinkhorn import balanced_assign
from deepclust.cluster.validation import InvalidInputError, check_features
from deepclust.cluster.whiten import Whitener
from deepclust.heads import HEAD_KINDS, HeadConfig, HeadResult, train_heads

CLUSTERERS = ("kmeans", "hdbscan")
#: Label of the points HDBSCAN leaves out of every cluster.
NOISE = -1


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
        clusterer: ``kmeans`` or ``hdbscan`` (labels may then be `NOISE`, -1).
        reduction: the fitted PCA / UMAP, or None.
        head: the trained clustering head (`deepclust.heads.HeadResult`), or None.
        k_choice: how ``k="auto"`` chose k (the silhouette curve), or None.
        n_features_in: ``D`` of the fitted ``x`` (checked by `transform`).
    """

    labels: np.ndarray
    centroids: np.ndarray
    whitener: Whitener | None
    spherical: bool
    inertia: float
    n_empty_repaired: int
    balanced: bool = False
    clusterer: str = "kmeans"
    reduction: Reduction | None = None
    head: HeadResult | None = None
    k_choice: KChoice | None = None
    n_features_in: int | None = None

    @property
    def k(self) -> int:
        """Clusters (HDBSCAN's noise is not one)."""
        return int(len(self.centroids))

    @property
    def n_noise(self) -> int:
        return int((self.labels == NOISE).sum())

    @property
    def whiten_dim(self) -> int:
        """Dimensions after whitening (0: no whitening)."""
        return 0 if self.whitener is None else int(self.whitener.projection.shape[1])

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` (N, D) in the clustering space ``(N, d)`` float32."""
        x = check_features(x, "x")
        expected = len(self.whitener.mean) if self.whitener is not None else self.centroids.shape[1]
        expected = self.n_features_in or expected
        if x.shape[1] != expected:
            raise InvalidInputError(f"x has {x.shape[1]} features but this clustering was fitted on {expected}.")
        if self.reduction is not None:
            x = self.reduction.transform(self._space(x))
            return l2_normalize(x) if self.space_spherical else x
        return self._space(x)

    @property
    def space_spherical(self) -> bool:
        """The final space is the unit sphere (cosine): not after UMAP, whose output is Euclidean."""
        return self.spherical and (self.reduction is None or self.reduction.method == "pca")

    def _space(self, x: np.ndarray) -> np.ndarray:
        if self.whitener is not None:
            return self.whitener(x)
        return l2_normalize(x) if self.spherical else x

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Cluster ``(N,)`` int64 of each row of ``x`` (same transform as the fit): the head's
        argmax, else the nearest centroid (with ``balanced`` the fitted rows may differ, since
        their labels were balanced; HDBSCAN's noise points get their nearest cluster)."""
        space = self.transform(x)
        if self.head is not None:
            return self.head.predict(space)
        return assign_to_centroids(space, self.centroids, spherical=self.space_spherical)

    def sizes(self) -> list[int]:
        """Points per cluster ``0..k-1`` (noise not counted: see `n_noise`)."""
        return np.bincount(self.labels[self.labels >= 0], minlength=self.k).astype(int).tolist()


def cluster_embeddings(
    x: np.ndarray,
    k: int | str | None,
    *,
    spherical: bool = True,
    whiten_dim: int = 0,
    n_init: int = 10,
    seed: int = 0,
    balanced: bool = False,
    max_iter: int = 100,
    clusterer: str = "kmeans",
    head: str | None = None,
    head_options: HeadConfig | Mapping[str, Any] | None = None,
    reduce: str | None = None,
    reduce_dim: int | None = None,
    k_range: str | Sequence[int] | None = None,
    min_cluster_size: int | None = None,
    labels_true: np.ndarray | None = None,
) -> Clustering:
    """Cluster the rows of ``x`` ``(N, D)`` into ``k`` groups (see the module doc for the steps).

    Args:
        x: embeddings, finite.
        k: clusters, ``1 <= k <= N``; ``"auto"``: chosen in ``k_range`` by the silhouette score;
            None with ``clusterer="hdbscan"`` (which finds the number itself).
        spherical: cosine k-means on L2-normalised rows (learned embeddings) instead of
            Euclidean (pixels, PCA). Implied by ``whiten_dim > 0``.
        whiten_dim: PCA-whitening dimension (0: none); capped at ``min(D, N - 1)``.
        n_init, seed, max_iter: k-means restarts, seed and Lloyd iterations.
        balanced: near-equal cluster sizes (Sinkhorn assignment to the k-means centroids).
        clusterer: ``"kmeans"`` (default) or ``"hdbscan"`` (noise label -1).
        head: None (default), ``"scan"`` or ``"temi"``: clustering heads on the embeddings.
        head_options: `deepclust.heads.HeadConfig` fields (``self_label``, ``entropy_weight``...).
        reduce, reduce_dim: ``"pca"`` / ``"umap"`` and its output dimension (default 50 / 10).
        k_range: ``"2:30"`` or ``(2, 30)``, the range ``k="auto"`` searches (inclusive).
        min_cluster_size: HDBSCAN's smallest cluster (default ``max(5, N // 100)``).
        labels_true: known labels (-1 unknown), only to report the heads' neighbour purity.

    Raises:
        InvalidInputError: bad ``x``, ``k`` or options (e.g. UMAP without umap-learn: the hint).
    """
    x = check_features(x, "x")
    _check_options(k, whiten_dim, clusterer, head, balanced)
    whitener = Whitener.fit(x, int(whiten_dim)) if whiten_dim else None
    spherical = bool(spherical or whitener is not None)
    space = whitener(x) if whitener is not None else (l2_normalize(x) if spherical else x)
    reduction = None
    if reduce is not None:
        space, reduction = reduce_features(space, reduce, n_components=reduce_dim, seed=seed, spherical=spherical)
    fit = Clustering(labels=np.zeros(0, np.int64), centroids=np.zeros((0, 1), np.float32), whitener=whitener,
                     spherical=spherical, inertia=0.0, n_empty_repaired=0, clusterer=clusterer, reduction=reduction,
                     n_features_in=int(x.shape[1]))
    if fit.space_spherical and reduction is not None:
        space = l2_normalize(space)
    if clusterer == "hdbscan":
        return _hdbscan(fit, space, min_cluster_size)
    if k == "auto":
        fit.k_choice = choose_k(space, k_range, spherical=fit.space_spherical, n_init=n_init, seed=seed)
        k = fit.k_choice.k
    assert isinstance(k, (int, np.integer))
    if head is not None:
        options = asdict(head_options) if isinstance(head_options, HeadConfig) else dict(head_options or {})
        options.setdefault("seed", seed)
        fit.head = train_heads(space, int(k), kind=head, labels=labels_true, **options)
        fit.labels = fit.head.labels
        fit.centroids, fit.inertia = _centroids(space, fit.labels, int(k), fit.space_spherical)
        return fit
    result = kmeans(space, int(k), n_init=n_init, max_iter=max_iter, seed=seed, spherical=fit.space_spherical)
    fit.labels, fit.centroids = np.asarray(result.labels, dtype=np.int64), result.centroids
    fit.inertia, fit.n_empty_repaired = float(result.inertia), int(result.n_empty_repaired)
    if balanced:
        # Cosine scores even for Euclidean k-means: with -d^2 scores a tight, far-away cluster
        # gets codes of ~1e-9 toward the other centroids and Sinkhorn cannot rebalance it.
        fit.labels = np.asarray(balanced_assign(l2_normalize(space), result.centroids), dtype=np.int64)
        fit.balanced = True
    return fit


def _check_options(k: Any, whiten_dim: Any, clusterer: str, head: str | None, balanced: bool) -> None:
    if isinstance(whiten_dim, bool) or not isinstance(whiten_dim, (int, np.integer)) or whiten_dim < 0:
        raise InvalidInputError(f"whiten_dim must be an integer >= 0 (0: no whitening), got {whiten_dim!r}.")
    if clusterer not in CLUSTERERS:
        raise InvalidInputError(f"clusterer must be one of {', '.join(CLUSTERERS)}, got {clusterer!r}.")
    if head is not None and head not in HEAD_KINDS:
        raise InvalidInputError(f"head must be one of {', '.join(HEAD_KINDS)} (or None), got {head!r}.")
    if clusterer == "hdbscan":
        if k not in (None, "auto"):
            raise InvalidInputError(f"HDBSCAN finds the number of clusters itself: pass k=None (got k={k!r}).")
        if head is not None or balanced:
            raise InvalidInputError("head and balanced apply to k clusters; they do not combine with HDBSCAN.")
    elif k is None or (isinstance(k, str) and k != "auto"):
        raise InvalidInputError(f"k must be a number of clusters or 'auto', got {k!r}.")
    if head is not None and balanced:
        raise InvalidInputError("balanced re-assigns k-means labels; a head's labels are its own (drop one).")


def _centroids(space: np.ndarray, labels: np.ndarray, k: int, spherical: bool) -> tuple[np.ndarray, float]:
    """Mean of each cluster's rows (unit length when spherical; 0 for an empty cluster) and the inertia."""
    centroids = np.zeros((k, space.shape[1]), dtype=np.float32)
    keep = labels >= 0
    np.add.at(centroids, labels[keep], space[keep])
    counts = np.bincount(labels[keep], minlength=k)[:, None]
    centroids = (centroids / np.maximum(counts, 1)).astype(np.float32)
    if spherical:
        centroids = l2_normalize(centroids)
    inertia = float(((space[keep] - centroids[labels[keep]]) ** 2).sum())
    return centroids.astype(np.float32), inertia


def _hdbscan(fit: Clustering, space: np.ndarray, min_cluster_size: int | None) -> Clustering:
    """scikit-learn's HDBSCAN (Campello et al. 2013) on the space; noise stays ``-1``."""
    from sklearn.cluster import HDBSCAN

    size = max(5, len(space) // 100) if min_cluster_size is None else int(min_cluster_size)
    if size < 2:
        raise InvalidInputError(f"min_cluster_size must be at least 2, got {min_cluster_size!r}.")
    labels = HDBSCAN(min_cluster_size=min(size, len(space)), metric="euclidean", copy=True).fit_predict(space)
    fit.labels = np.asarray(labels, dtype=np.int64)
    n_clusters = int(fit.labels.max()) + 1
    if n_clusters < 1:
        raise InvalidInputError(f"HDBSCAN found no cluster: all {len(space)} points are noise. Lower "
                                f"min_cluster_size (now {size}) or reduce the embeddings first (reduce='pca'/'umap').")
    fit.centroids, fit.inertia = _centroids(space, fit.labels, n_clusters, fit.space_spherical)
    return fit


__all__ = ["CLUSTERERS", "NOISE", "Clustering", "cluster_embeddings"]
