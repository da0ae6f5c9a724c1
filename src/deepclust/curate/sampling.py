"""Balanced sampling with hierarchical k-means (Vo et al. 2024, "Automatic data curation for
self-supervised learning: a clustering-based approach", arXiv:2405.15613).

**Hierarchical k-means.** Level 1 clusters the (L2-normalised) embeddings into ``k_1``
clusters; level ``t`` clusters the ``k_{t-1}`` centroids of level ``t-1`` into ``k_t``
clusters, so ``k_1 > k_2 > ... > k_L``. Every k-means is `deepclust.cluster.kmeans`
(faiss, spherical). After each level's k-means, ``resample_steps`` resampling steps move
the centroids towards a uniform cover of the data's support rather than its dense
regions: each cluster's centroid becomes the mean of the ``r`` members closest to it
(``r`` = ``resample_points``, default the median cluster size of that level), then every
member is re-assigned to its nearest centroid. (Our reading of the paper's
"resampling-clustering" step; the official code also offers random resampling.)

Default cluster counts (``clusters=None``): a geometric ladder
``k_t = round(N ** ((L + 1 - t) / (L + 1)))``, e.g. N = 10,000 and L = 2 give 464, 22.

**Hierarchical sampling** down to ``target`` images: the budget is split equally over the
top-level clusters (a cluster smaller than its share gives all its images and the rest is
shared by the others), then recursively over each cluster's children at the level below,
and within a level-1 cluster the images closest to its centroid are taken first. A small,
well separated concept that has its own top-level cluster therefore keeps its share,
where uniform random sampling keeps it only in proportion to its size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepclust.cluster import assign_to_centroids, kmeans, l2_normalize
from deepclust.errors import DeepclustError

DEFAULT_LEVELS = 2
DEFAULT_RESAMPLE_STEPS = 1


@dataclass
class Hierarchy:
    """``parents[0]``: level-1 cluster of every image ``(N,)``; ``parents[t]``: level-(t+1)
    cluster of every level-t cluster ``(k_t,)``. ``centroids[t]``: ``(k_{t+1}, D)``."""

    parents: list[np.ndarray]
    centroids: list[np.ndarray]
    clusters: list[int]

    def top_labels(self) -> np.ndarray:
        """The top-level cluster of every image ``(N,)``."""
        labels = self.parents[0]
        for up in self.parents[1:]:
            labels = up[labels]
        return labels


def default_clusters(n: int, levels: int = DEFAULT_LEVELS) -> list[int]:
    """The geometric ladder of the module doc (each at least 2, at most ``n``); levels that
    would not decrease (tiny ``n``) are dropped."""
    ks = [min(n, max(2, int(round(n ** ((levels + 1 - t) / (levels + 1)))))) for t in range(1, levels + 1)]
    return [k for i, k in enumerate(ks) if i == 0 or k < ks[i - 1]]


def check_clusters(clusters: list[int], n: int) -> list[int]:
    if not clusters or any(isinstance(k, bool) or int(k) != k or k < 1 for k in clusters):
        raise DeepclustError(f"clusters per level must be positive whole numbers, got {clusters!r}")
    if any(b >= a for a, b in zip(clusters, clusters[1:])):
        raise DeepclustError(f"clusters per level must decrease from the first level up, got {clusters!r}")
    if clusters[0] > n:
        raise DeepclustError(f"{clusters[0]} first-level clusters for only {n} images; use fewer (--clusters)")
    return [int(k) for k in clusters]


def _resample(x: np.ndarray, labels: np.ndarray, centroids: np.ndarray, steps: int,
              points: int | None) -> tuple[np.ndarray, np.ndarray]:
    for _ in range(steps):
        sizes = np.bincount(labels, minlength=len(centroids))
        r = int(points) if points else max(1, int(np.median(sizes[sizes > 0])))
        new = centroids.copy()
        for c in np.nonzero(sizes)[0]:
            members = np.nonzero(labels == c)[0]
            closest = members[np.argsort(-(x[members] @ centroids[c]), kind="stable")[:r]]
            new[c] = x[closest].mean(axis=0)
        centroids = l2_normalize(new)
        labels = assign_to_centroids(x, centroids, spherical=True)
    return labels, centroids


def hierarchical_kmeans(x: np.ndarray, clusters: list[int], *, resample_steps: int = DEFAULT_RESAMPLE_STEPS,
                        resample_points: int | None = None, n_init: int = 3, seed: int = 0) -> Hierarchy:
    """Hierarchical spherical k-means of ``x`` ``(N, D)`` with ``clusters[t]`` clusters at level t+1."""
    clusters = check_clusters(list(clusters), len(x))
    level_x = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
    parents, centroids = [], []
    for t, k in enumerate(clusters):
        result = kmeans(level_x, min(k, len(level_x)), n_init=n_init, seed=seed + t, spherical=True)
        labels, cents = _resample(level_x, result.labels, result.centroids, resample_steps, resample_points)
        parents.append(labels)
        centroids.append(cents)
        level_x = cents
    return Hierarchy(parents, centroids, clusters)


def split_budget(budget: int, caps: np.ndarray) -> np.ndarray:
    """An equal share of ``budget`` for each slot, none above its cap, the rest re-shared."""
    caps = np.asarray(caps, dtype=np.int64)
    alloc = np.zeros(len(caps), dtype=np.int64)
    remaining = int(min(budget, caps.sum()))
    order = np.argsort(caps, kind="stable")
    for pos, i in enumerate(order):
        give = min(int(caps[i]), remaining // (len(order) - pos))
        alloc[i] = give
        remaining -= give
    for i in order[::-1]:  # floor division leftovers: the largest slots with room first
        if remaining == 0:
            break
        extra = min(remaining, int(caps[i] - alloc[i]))
        alloc[i] += extra
        remaining -= extra
    return alloc


def hierarchical_sample(x: np.ndarray, hierarchy: Hierarchy, target: int) -> np.ndarray:
    """Indices (increasing) of ``target`` rows of ``x`` chosen by hierarchical sampling."""
    n = len(hierarchy.parents[0])
    if not 1 <= target <= n:
        raise DeepclustError(f"target size {target} must be between 1 and the {n} images available")
    x = l2_normalize(np.ascontiguousarray(x, dtype=np.float32))
    counts = [np.bincount(hierarchy.parents[0], minlength=len(hierarchy.centroids[0]))]
    for t in range(1, len(hierarchy.parents)):
        counts.append(np.bincount(hierarchy.parents[t], weights=counts[t - 1],
                                  minlength=len(hierarchy.centroids[t])).astype(np.int64))
    chosen: list[int] = []

    def take(level: int, cluster: int, budget: int) -> None:
        members = np.nonzero(hierarchy.parents[level] == cluster)[0]
        if level == 0:
            sims = x[members] @ hierarchy.centroids[0][cluster]
            chosen.extend(members[np.argsort(-sims, kind="stable")[:budget]].tolist())
            return
        for child, share in zip(members, split_budget(budget, counts[level - 1][members])):
            if share:
                take(level - 1, int(child), int(share))

    top = len(hierarchy.parents) - 1
    for cluster, share in enumerate(split_budget(target, counts[top])):
        if share:
            take(top, cluster, int(share))
    return np.sort(np.asarray(chosen, dtype=np.int64))


def random_sample(n: int, target: int, seed: int = 0) -> np.ndarray:
    """Uniform random sampling without replacement (the baseline), increasing indices."""
    return np.sort(np.random.default_rng(seed).choice(n, size=target, replace=False))


__all__ = ["Hierarchy", "default_clusters", "hierarchical_kmeans", "hierarchical_sample", "split_budget",
           "random_sample", "DEFAULT_LEVELS", "DEFAULT_RESAMPLE_STEPS"]
