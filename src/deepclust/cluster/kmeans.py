"""k-means on feature matrices: faiss when available (GPU if faiss sees one), scikit-learn otherwise.

DeepCluster (Caron et al., ECCV 2018) clusters the whole data set's features with faiss every
epoch; the same function serves the `cluster` command and evaluation. Labels are always the
nearest centroid under the final centroids (IndexFlatL2, or IndexFlatIP for spherical k-means),
and no cluster is left empty when there are at least k distinct rows (see
`deepclust.cluster.repair`: identical rows are never split over several clusters).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepclust.cluster.repair import repair_empty_clusters
from deepclust.cluster.validation import InvalidInputError, check_features, check_n_clusters
from deepclust.errors import DeepclustError

BACKENDS = ("auto", "faiss", "sklearn")
_CHUNK = 16384  # rows per chunk when computing distances in numpy (bounds memory)


@dataclass
class KMeansResult:
    """Outcome of `kmeans`.

    Attributes:
        labels: ``(N,)`` int64 cluster index in ``[0, k)`` for every row; no cluster
            is empty unless ``x`` has fewer than k distinct rows.
        centroids: ``(k, D)`` float32 (unit length when spherical).
        inertia: sum of squared Euclidean distances of rows to their centroid (on the
            L2-normalised rows when spherical), computed the same way for every backend.
        n_empty_repaired: clusters that were empty after fitting and were repaired.
    """

    labels: np.ndarray
    centroids: np.ndarray
    inertia: float
    n_empty_repaired: int


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def _faiss_num_gpus() -> int:
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def assign_to_centroids(x: np.ndarray, centroids: np.ndarray, *, spherical: bool = False) -> np.ndarray:
    """Nearest centroid for each row: ``(N,)`` int64.

    Squared L2 (faiss IndexFlatL2) or, for spherical k-means, largest inner product
    (IndexFlatIP); numpy in chunks when faiss is missing.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    centroids = np.ascontiguousarray(centroids, dtype=np.float32)
    if faiss_available():
        import faiss

        index: Any = faiss.IndexFlatIP(x.shape[1]) if spherical else faiss.IndexFlatL2(x.shape[1])
        if _faiss_num_gpus() > 0:
            index = faiss.index_cpu_to_all_gpus(index)
        index.add(centroids)
        _, idx = index.search(x, 1)
        return idx[:, 0].astype(np.int64)
    out = np.empty(len(x), dtype=np.int64)
    c_sq = (centroids**2).sum(axis=1)
    for start in range(0, len(x), _CHUNK):
        block = x[start : start + _CHUNK]
        scores = block @ centroids.T
        out[start : start + _CHUNK] = np.argmax(scores if spherical else 2 * scores - c_sq, axis=1)
    return out


def _inertia(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> float:
    total = 0.0
    for start in range(0, len(x), _CHUNK):
        diff = x[start : start + _CHUNK] - centroids[labels[start : start + _CHUNK]]
        total += float(np.einsum("ij,ij->", diff, diff, dtype=np.float64))
    return total


def _fit_faiss(x, k, n_init, max_iter, seed, spherical, verbose) -> np.ndarray:
    import faiss

    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=max_iter,
        nredo=n_init,
        seed=seed,
        spherical=spherical,
        verbose=verbose,
        gpu=_faiss_num_gpus() > 0,
        # Use every point (faiss would subsample to 256 per centroid) and do not warn
        # about few points per centroid: over-clustering small sets is a normal use.
        min_points_per_centroid=1,
        max_points_per_centroid=max(len(x), 1),
    )
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32).reshape(k, x.shape[1])


def _fit_sklearn(x, k, n_init, max_iter, seed, verbose) -> np.ndarray:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, max_iter=max_iter, random_state=seed, verbose=int(verbose))
    km.fit(x)
    return km.cluster_centers_.astype(np.float32)


def kmeans(
    x: np.ndarray,
    k: int,
    *,
    n_init: int = 10,
    max_iter: int = 100,
    seed: int = 0,
    spherical: bool = False,
    backend: str = "auto",
    verbose: bool = False,
) -> KMeansResult:
    """Cluster the rows of ``x`` into ``k`` groups.

    Args:
        x: ``(N, D)`` features (any float dtype; converted to float32). Must be finite.
        k: number of clusters, ``1 <= k <= N``. Over-clustering (k above the number of
            classes) is fine.
        n_init: independent restarts; the one with the lowest objective is kept
            (faiss ``nredo``, scikit-learn ``n_init``).
        max_iter: Lloyd iterations per restart.
        seed: random seed (same seed and data give the same result on a backend).
        spherical: cosine k-means: rows are L2-normalised and centroids kept unit length;
            labels come from the largest inner product. With the scikit-learn backend this
            is Euclidean k-means on the normalised rows followed by centroid normalisation
            (a close approximation; faiss re-normalises centroids every iteration).
        backend: ``"faiss"``, ``"sklearn"`` or ``"auto"`` (faiss if installed).
        verbose: print the backend's progress.

    Returns:
        `KMeansResult`; labels are the nearest final centroid, with empty clusters repaired
        by `repair_empty_clusters` so every cluster in ``[0, k)`` has at least one row
        (when ``x`` has at least k distinct rows; identical rows are never split).

    Raises:
        InvalidInputError: ``x`` is not 2-D/finite, ``k`` is outside ``[1, N]``, or an
            option is invalid. DeepclustError: ``backend="faiss"`` but faiss is not installed.
    """
    x = check_features(x, "x")
    k = check_n_clusters(k, len(x))
    for name, value in (("n_init", n_init), ("max_iter", max_iter)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}.")
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}.")
    if backend == "auto":
        backend = "faiss" if faiss_available() else "sklearn"
    elif backend == "faiss" and not faiss_available():
        raise DeepclustError("backend='faiss' needs faiss: pip install faiss-cpu (or faiss-gpu), "
                             "or use backend='sklearn'.")

    if spherical:
        x = l2_normalize(x)
    if backend == "faiss":
        centroids = _fit_faiss(x, k, int(n_init), int(max_iter), int(seed), spherical, verbose)
    else:
        centroids = _fit_sklearn(x, k, int(n_init), int(max_iter), int(seed), verbose)
    if spherical:
        centroids = l2_normalize(centroids)

    labels = assign_to_centroids(x, centroids, spherical=spherical)
    labels, centroids, n_repaired = repair_empty_clusters(x, labels, centroids, seed, spherical=spherical)
    return KMeansResult(
        labels=labels,
        centroids=centroids.astype(np.float32, copy=False),
        inertia=_inertia(x, labels, centroids),
        n_empty_repaired=n_repaired,
    )
