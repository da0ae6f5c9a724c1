"""DeepCluster's empty-cluster repair: split a non-empty cluster with a symmetric perturbation,
never separating identical points (such clusters stay empty)."""

import numpy as np
import pytest

from deepclust.cluster import InvalidInputError, repair_empty_clusters


def _setup(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    centroids = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 6, size=40)
    labels[np.isin(labels, [2, 4])] = 0  # clusters 2 and 4 are empty
    return x, labels, centroids


def test_repair_fills_every_empty_cluster():
    x, labels, centroids = _setup()
    new_labels, new_centroids, n_repaired = repair_empty_clusters(x, labels, centroids, seed=0)
    assert n_repaired == 2
    sizes = np.bincount(new_labels, minlength=6)
    assert sizes.min() >= 1 and sizes.sum() == len(x)
    assert new_labels.dtype == np.int64 and new_centroids.dtype == np.float32
    # Only points of donor clusters move, and only into the repaired clusters.
    moved = new_labels != labels
    assert set(new_labels[moved].tolist()) <= {2, 4}
    # Repaired clusters' centroids are the means of their new members.
    for j in (2, 4):
        np.testing.assert_allclose(new_centroids[j], x[new_labels == j].mean(0), atol=1e-5)
    # Inputs are not modified in place.
    assert not np.isin(labels, [2, 4]).any()


def test_repair_without_empty_clusters_changes_nothing():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype(np.float32)
    labels = np.arange(12) % 3
    centroids = rng.normal(size=(3, 3)).astype(np.float32)
    new_labels, new_centroids, n = repair_empty_clusters(x, labels, centroids)
    assert n == 0
    np.testing.assert_array_equal(new_labels, labels)
    np.testing.assert_array_equal(new_centroids, centroids)


def test_identical_points_are_never_split_and_their_clusters_stay_empty():
    """All points identical, all in one cluster: DeepCluster keeps them together, so the 4
    other clusters stay empty (n_repaired counts the clusters actually filled: 0)."""
    x = np.ones((5, 3), dtype=np.float32)
    labels = np.zeros(5, dtype=np.int64)
    centroids = np.arange(15, dtype=np.float32).reshape(5, 3)
    new_labels, new_centroids, n = repair_empty_clusters(x, labels, centroids, seed=1)
    assert n == 0
    assert new_labels.tolist() == [0] * 5
    np.testing.assert_array_equal(new_centroids, centroids)


def _groups_intact(x, labels):
    """True when every group of identical rows carries one label."""
    _, group = np.unique(x, axis=0, return_inverse=True)
    return all(len(np.unique(labels[group.ravel() == g])) == 1 for g in np.unique(group))


@pytest.mark.parametrize("seed", range(5))
def test_groups_of_identical_points_stay_together_when_clusters_are_filled(seed):
    """3 distinct vectors repeated (4, 3 and 1 times) in one cluster of 4: two empty clusters
    can be filled without splitting a group (3 groups for 3 clusters), the third cannot."""
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(3, 4)).astype(np.float32)
    x = np.repeat(points, [4, 3, 1], axis=0)
    labels = np.zeros(len(x), dtype=np.int64)
    centroids = rng.normal(size=(4, 4)).astype(np.float32)
    new_labels, _, n = repair_empty_clusters(x, labels, centroids, seed=seed)
    assert _groups_intact(x, new_labels)
    assert n == 2 and len(np.unique(new_labels)) == 3 and np.bincount(new_labels, minlength=4)[3] == 0


def test_repair_spherical_keeps_unit_centroids():
    x, labels, centroids = _setup(1)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, new_centroids, _ = repair_empty_clusters(x, labels, centroids, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(new_centroids[[2, 4]], axis=1), 1.0, atol=1e-5)


def test_repair_rejects_impossible_requests():
    with pytest.raises(InvalidInputError, match="k <= 2"):
        repair_empty_clusters(np.zeros((2, 2)), np.zeros(2, int), np.zeros((3, 2)))
    with pytest.raises(InvalidInputError, match="lie in"):
        repair_empty_clusters(np.zeros((4, 2)), np.array([0, 1, 2, 5]), np.zeros((3, 2)))
