"""Hierarchical k-means and hierarchical sampling (Vo et al. 2024)."""

from __future__ import annotations

import numpy as np
import pytest

from deepclust.curate.sampling import (
    default_clusters,
    hierarchical_kmeans,
    hierarchical_sample,
    random_sample,
    split_budget,
)
from deepclust.errors import DeepclustError


def _big_and_rare(n_big: int = 400, n_rare: int = 3, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A broad blob of ``n_big`` points and a tight, far-away cluster of ``n_rare`` (the last rows)."""
    rng = np.random.default_rng(seed)
    big = rng.normal(0, 1, (n_big, dim)) + 4 * np.eye(dim)[0]
    rare = rng.normal(0, 0.05, (n_rare, dim)) + 4 * np.eye(dim)[1]
    return np.vstack([big, rare]).astype(np.float32), np.arange(n_big, n_big + n_rare)


def test_hierarchical_sampling_keeps_a_rare_cluster_that_random_sampling_drops():
    x, rare = _big_and_rare()
    target = 10
    dropped_by_random = not np.isin(random_sample(len(x), target, seed=0), rare).any()
    assert dropped_by_random  # P(keep none of 3 out of 403 at 10) ~ 0.93; seed 0 is one of those
    hierarchy = hierarchical_kmeans(x, [20, 4], seed=0)
    picked = hierarchical_sample(x, hierarchy, target)
    assert len(picked) == target == len(np.unique(picked))
    assert np.isin(picked, rare).any()
    # The rare points share a small top-level cluster, which gets an equal share of the budget.
    top = hierarchy.top_labels()
    assert len(set(top[rare].tolist())) == 1 and (top == top[rare[0]]).sum() < 10
    assert np.isin(picked, np.nonzero(top == top[rare[0]])[0]).sum() == target // 4


def test_hierarchy_shapes_and_parents():
    x, _ = _big_and_rare(n_big=120)
    h = hierarchical_kmeans(x, [12, 3], resample_steps=2, seed=1)
    assert [p.shape for p in h.parents] == [(len(x),), (12,)]
    assert [c.shape for c in h.centroids] == [(12, 16), (3, 16)]
    assert np.allclose(np.linalg.norm(h.centroids[0], axis=1), 1.0, atol=1e-5)
    assert h.top_labels().max() < 3 and (h.top_labels() == h.parents[1][h.parents[0]]).all()


def test_leaf_sampling_takes_the_images_closest_to_the_centroid():
    rng = np.random.default_rng(3)
    centre = np.eye(8, dtype=np.float32)[0]
    x = (centre + rng.normal(0, 0.3, (30, 8))).astype(np.float32)
    h = hierarchical_kmeans(x, [1], resample_steps=0)
    picked = hierarchical_sample(x, h, 5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert set(picked.tolist()) == set(np.argsort(-(unit @ h.centroids[0][0]))[:5].tolist())


@pytest.mark.parametrize("budget, caps, expected", [
    (9, [10, 10, 10], [3, 3, 3]),
    (10, [1, 10, 10], [1, 4, 5]),   # the small slot gives what it has; 9 = 4 + 5 (remainder to the later slot)
    (10, [2, 2, 2], [2, 2, 2]),     # budget above the total: everything
    (7, [5, 0, 5], [3, 0, 4]),
])
def test_split_budget(budget, caps, expected):
    alloc = split_budget(budget, np.array(caps))
    assert alloc.tolist() == expected
    assert (alloc <= np.array(caps)).all() and alloc.sum() == min(budget, sum(caps))


def test_default_clusters_and_bad_settings():
    assert default_clusters(10_000, 2) == [464, 22]
    assert default_clusters(10, 3) == [6, 3, 2]
    assert default_clusters(2, 2) == [2] and default_clusters(1, 2) == [1]  # no level that does not decrease
    x, _ = _big_and_rare(n_big=20)
    with pytest.raises(DeepclustError, match="decrease"):
        hierarchical_kmeans(x, [4, 8])
    with pytest.raises(DeepclustError, match="first-level clusters"):
        hierarchical_kmeans(x, [100, 2])
    with pytest.raises(DeepclustError, match="target size"):
        hierarchical_sample(x, hierarchical_kmeans(x, [4, 2]), len(x) + 1)
