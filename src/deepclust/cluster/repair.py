"""Empty-cluster repair, as in DeepCluster (Caron et al., ECCV 2018, Sec. 3.4).

When a cluster ends up with no points, DeepCluster (and faiss's own k-means loop) takes a
random non-empty cluster, gives the empty cluster that centroid with a small perturbation
and pushes the donor the opposite way (``c + e``, ``c - e``), then splits the donor's
points between the two. We pick the donor with probability proportional to its size (as
faiss does) so large clusters are split first, and only donors with at least two *distinct*
points so that both halves can be non-empty.

Identical points always stay together, as in DeepCluster: each point goes to the nearer of
the two perturbed centroids (a function of the point, so duplicates follow each other),
and a group of identical vectors is never split over several labels. An empty cluster for
which no donor has two distinct points is left empty (and counted as not repaired);
DeepCluster's uniform sampler skips empty clusters.
"""

from __future__ import annotations

import numpy as np

from deepclust.cluster.validation import InvalidInputError

# Size of the symmetric perturbation relative to the donor cluster's spread. Small enough
# not to move the centroid noticeably, large enough to survive float32 rounding.
_RELATIVE_EPS = 1e-3


def repair_empty_clusters(
    x: np.ndarray,
    labels: np.ndarray,
    centroids: np.ndarray,
    seed: int = 0,
    *,
    spherical: bool = False,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Give empty clusters points by splitting random non-empty clusters (identical points
    are never separated; see the module doc).

    Args:
        x: ``(N, D)`` float features.
        labels: ``(N,)`` int cluster indices in ``[0, k)``.
        centroids: ``(k, D)`` centroids; ``k = len(centroids)``.
        seed: random seed for the donor choice and the perturbation direction.
        spherical: re-normalise the two new centroids to unit length (spherical k-means).

    Returns:
        ``(labels, centroids, n_repaired)``: new int64 labels and float32 centroids (copies),
        and the number of empty clusters that were filled. When ``x`` has at least ``k``
        distinct rows no cluster is empty afterwards; otherwise clusters that could only be
        filled by splitting identical points stay empty (with their old centroids). Only
        donors and repaired clusters change; their centroids become the means of their new
        members.
    """
    x = np.asarray(x, dtype=np.float32)
    labels = np.array(labels, dtype=np.int64, copy=True)
    centroids = np.array(centroids, dtype=np.float32, copy=True)
    k = len(centroids)
    if x.ndim != 2 or labels.shape != (len(x),) or centroids.ndim != 2 or centroids.shape[1] != x.shape[1]:
        raise InvalidInputError(
            f"repair_empty_clusters needs x (N, D), labels (N,), centroids (k, D); got "
            f"{x.shape}, {labels.shape}, {centroids.shape}."
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= k):
        raise InvalidInputError(f"labels must lie in [0, {k}); got values in [{labels.min()}, {labels.max()}].")
    if len(x) < k:
        raise InvalidInputError(f"cannot fill {k} clusters with {len(x)} points; use k <= {len(x)}.")

    rng = np.random.default_rng(seed)
    sizes = np.bincount(labels, minlength=k)
    empty = np.flatnonzero(sizes == 0)
    n_repaired = 0
    for j in empty:
        splittable = [c for c in np.flatnonzero(sizes >= 2) if _has_two_distinct(x[labels == c])]
        if not splittable:
            break  # only groups of identical points remain: leave the other clusters empty
        cand = np.asarray(splittable)
        donor = int(rng.choice(cand, p=sizes[cand] / sizes[cand].sum()))
        members = np.flatnonzero(labels == donor)
        to_new = _split(x[members], centroids[donor], rng)
        labels[members[to_new]] = j
        for cluster, mask in ((j, to_new), (donor, ~to_new)):
            centre = x[members][mask].mean(axis=0)
            if spherical:
                centre = centre / (np.linalg.norm(centre) + 1e-12)
            centroids[cluster] = centre
        sizes[j] = int(to_new.sum())
        sizes[donor] -= sizes[j]
        n_repaired += 1
    return labels, centroids, n_repaired


def _has_two_distinct(points: np.ndarray) -> bool:
    return len(points) >= 2 and bool((points != points[0]).any())


def _split(points: np.ndarray, c: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of the donor's points that move to the new cluster: the nearer of
    ``c + e`` / ``c - e``; when that separates nothing, the group of points identical to the
    one leaning most towards ``c + e`` (never the whole donor: it has two distinct points)."""
    direction = np.asarray(rng.standard_normal(points.shape[1]), dtype=np.float32)
    direction /= np.linalg.norm(direction) + 1e-12
    spread = float(np.sqrt(((points - c) ** 2).sum(axis=1).mean())) + float(np.linalg.norm(c))
    eps = direction * (_RELATIVE_EPS * spread + 1e-6)
    margin = ((points - (c - eps)) ** 2).sum(axis=1) - ((points - (c + eps)) ** 2).sum(axis=1)
    to_new = margin > 0
    if to_new.all() or not to_new.any():
        anchor = points[int(np.argmax(margin))]
        to_new = (points == anchor).all(axis=1)
    return to_new
