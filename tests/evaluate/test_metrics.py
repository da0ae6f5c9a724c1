"""Clustering metrics against brute force and scikit-learn; unknown labels ignored."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from deepclust.cluster import InvalidInputError
from deepclust.evaluate.metrics import (
    ari,
    cluster_acc,
    cluster_purity,
    clustering_metrics,
    confusion_matrix,
    many_to_one_acc,
    nmi,
)


def brute_force_acc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Best accuracy over every one-to-one map from clusters to classes (unmatched = wrong)."""
    clusters, classes = np.unique(y_pred), np.unique(y_true)
    best = 0
    slots = list(classes) + [None] * max(0, len(clusters) - len(classes))
    for perm in itertools.permutations(slots, len(clusters)):
        mapping = dict(zip(clusters, perm))
        best = max(best, sum(mapping[p] == t for t, p in zip(y_true, y_pred)))
    return best / len(y_true)


def brute_force_many_to_one(y_true, y_pred) -> float:
    correct = 0
    for c in np.unique(y_pred):
        correct += np.bincount(y_true[y_pred == c]).max()
    return correct / len(y_true)


@pytest.mark.parametrize("n_classes, n_clusters, seed", [(4, 4, 0), (3, 5, 1), (5, 3, 2), (4, 4, 3)])
def test_acc_matches_brute_force_on_random_labelings(n_classes, n_clusters, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, size=30)
    y_pred = rng.integers(0, n_clusters, size=30)
    assert cluster_acc(y_true, y_pred) == pytest.approx(brute_force_acc(y_true, y_pred))
    assert many_to_one_acc(y_true, y_pred) == pytest.approx(brute_force_many_to_one(y_true, y_pred))


def test_acc_is_invariant_to_cluster_renaming():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([7, 7, 3, 3, 9, 9, 3])  # arbitrary, non-contiguous ids
    assert cluster_acc(y_true, y_pred) == pytest.approx(6 / 7)
    assert cluster_acc(y_true, np.array([2, 2, 0, 0, 1, 1, 1])) == 1.0


def test_over_clustering_penalised_by_acc_not_by_many_to_one():
    y_true = np.repeat([0, 1], 6)
    y_pred = np.arange(12) // 2  # six pure clusters
    assert many_to_one_acc(y_true, y_pred) == 1.0
    assert cluster_acc(y_true, y_pred) == pytest.approx(4 / 12)


def test_nmi_and_ari_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 5, 200), rng.integers(0, 7, 200)
    y_pred[:100] = y_true[:100]
    assert nmi(y_true, y_pred) == pytest.approx(normalized_mutual_info_score(y_true, y_pred))
    assert ari(y_true, y_pred) == pytest.approx(adjusted_rand_score(y_true, y_pred))


def test_unknown_true_labels_are_ignored():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 3, 40), rng.integers(0, 4, 40)
    masked = y_true.copy()
    masked[::3] = -1
    expected = clustering_metrics(y_true[masked >= 0], y_pred[masked >= 0])
    got = clustering_metrics(masked, y_pred)
    for key in ("acc", "acc_many_to_one", "nmi", "ari"):
        assert got[key] == pytest.approx(expected[key])
    assert got["n_evaluated"] == int((masked >= 0).sum())
    assert got["n_clusters_used"] == len(np.unique(y_pred))


def test_clustering_metrics_keys_and_perfect_score():
    y = np.array([0, 0, 1, 1, 2])
    metrics = clustering_metrics(y, np.array([1, 1, 2, 2, 0]))
    assert {"acc", "acc_many_to_one", "nmi", "ari", "n_clusters_used"} <= set(metrics)
    assert metrics["acc"] == metrics["nmi"] == metrics["ari"] == 1.0
    assert metrics["n_clusters_used"] == 3


def test_confusion_matrix_and_purity():
    y_true = np.array([0, 0, 1, 1, 1, 2, -1])
    y_pred = np.array([1, 1, 1, 0, 0, 3, 2])
    table = confusion_matrix(y_true, y_pred)
    np.testing.assert_array_equal(table, sk_confusion_matrix(y_true[:6], y_pred[:6], labels=[0, 1, 2, 3])[:3])
    assert table.shape == (3, 4)
    # Cluster 2 has only an unknown member, so it has no purity.
    assert cluster_purity(y_true, y_pred) == pytest.approx({0: 1.0, 1: 2 / 3, 3: 1.0})


@pytest.mark.parametrize(
    "y_true, y_pred, message",
    [
        ([0, 1, 2], [0, 1], "3 entries"),
        ([-1, -1], [0, 1], "no entry has a known"),
        ([[0, 1]], [[0, 1]], "1-D"),
        ([0.5, 1.0], [0, 1], "integer"),
    ],
)
def test_bad_labels_are_rejected(y_true, y_pred, message):
    with pytest.raises(InvalidInputError, match=message):
        clustering_metrics(y_true, y_pred)
