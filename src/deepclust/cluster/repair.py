"""Empty-cluster repair, as in DeepCluster (Caron et al., ECCV 2018, Sec. 3.4).

When a cluster ends up with no points, DeepCluster (and faiss's own k-means loop) takes a
random non-empty cluster, gives the empty cluster that centroid with a small perturbation
and pushes the donor the opposite way (``c + e``, ``c - e``), then splits the donor's
points between the two. We pick the donor with probability proportional to its size (as
faiss does) so large clusters are split first, and only donors with at least two points so
that both halves can be non-empty.
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
    """Give every empty cluster points by splitting a random non-empty cluster.

    Args:
        x: ``(N, D)`` float features.
        labels: ``(N,)`` int cluster indices in ``[0, k)``.
        centroids: ``(k, D)`` centroids; ``k = len(centroids)``.
        seed: random seed for the donor choice and the perturbation direction.
        spherical: re-normalise the two new centroids to unit length (spherical k-means).

    Returns:
        ``(labels, centroids, n_repaired)``: new int64 labels and float32 centroids (copies),
        and the number of clusters that were empty. When ``N >= k`` no cluster is empty
        afterwards. Only the donor and the repaired cluster change; their centroids become
        the means of their new members.
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
    for j in empty:
        splittable = np.flatnonzero(sizes >= 2)
        # N >= k guarantees a cluster with >= 2 points while any cluster is empty.
        donor = int(rng.choice(splittable, p=sizes[splittable] / sizes[splittable].sum()))
        members = np.flatnonzero(labels == donor)
        points = x[members]
        c = centroids[donor]
        direction = rng.standard_normal(x.shape[1]).astype(np.float32)
        direction /= np.linalg.norm(direction) + 1e-12
        spread = float(np.sqrt(((points - c) ** 2).sum(axis=1).mean())) + float(np.linalg.norm(c))
        eps = direction * (_RELATIVE_EPS * spread + 1e-6)
        c_new, c_donor = c + eps, c - eps
        # Re-split the donor's points by the nearer of the two perturbed centroids.
        to_new = ((points - c_new) ** 2).sum(axis=1) < ((points - c_donor) ** 2).sum(axis=1)
        if to_new.all() or not to_new.any():
            # Degenerate split (e.g. duplicate points): the hyperplane through c did not
            # separate them, so move the single point that leans most towards c_new.
            margin = ((points - c_donor) ** 2).sum(axis=1) - ((points - c_new) ** 2).sum(axis=1)
            to_new = np.zeros(len(members), dtype=bool)
            to_new[int(np.argmax(margin))] = True
        labels[members[to_new]] = j
        for cluster, mask in ((j, to_new), (donor, ~to_new)):
            centre = points[mask].mean(axis=0)
            if spherical:
                centre = centre / (np.linalg.norm(centre) + 1e-12)
            centroids[cluster] = centre
        sizes[j] = int(to_new.sum())
        sizes[donor] -= sizes[j]
    return labels, centroids, int(len(empty))
