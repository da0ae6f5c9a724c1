"""Frozen-feature evaluation: weighted k-NN (vs brute force), linear probe, few-shot prototypes."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from deepclust.cluster import InvalidInputError
from deepclust.evaluate import fewshot_accuracy, fit_linear_probe, knn_accuracy, knn_predict, linear_probe_accuracy

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def brute_force_weighted_knn(train_x, train_y, test_x, k, T):
    """DINO's weighted vote, one test sample at a time with Python loops."""
    train_n = train_x / np.linalg.norm(train_x, axis=1, keepdims=True)
    predictions = []
    for q in test_x:
        q = q / np.linalg.norm(q)
        sims = [float(q @ t) for t in train_n]
        order = sorted(range(len(sims)), key=lambda i: -sims[i])[:k]
        votes = {}
        for i in order:
            votes[int(train_y[i])] = votes.get(int(train_y[i]), 0.0) + np.exp(sims[i] / T)
        predictions.append(max(votes, key=votes.get))
    return np.array(predictions)


@pytest.mark.parametrize("k, T", [(1, 0.07), (5, 0.1), (20, 0.07)])
def test_knn_matches_brute_force(k, T):
    rng = np.random.default_rng(k)
    train_x, train_y = rng.normal(size=(60, 6)), rng.integers(0, 4, 60)
    test_x = rng.normal(size=(25, 6))
    expected = brute_force_weighted_knn(train_x, train_y, test_x, k, T)
    np.testing.assert_array_equal(knn_predict(train_x, train_y, test_x, k=k, T=T, chunk_size=7), expected)
    test_y = rng.integers(0, 4, 25)
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=k, T=T) == pytest.approx((expected == test_y).mean())


def test_knn_is_near_perfect_on_separated_classes_and_ignores_unknown_labels():
    x, y = make_blobs(300, 10, centers=4, cluster_std=1.0, random_state=0)
    train_y = y[:200].copy()
    train_y[:50] = -1  # unknown labels do not vote
    test_y = y[200:].copy()
    test_y[0] = -1  # and are not scored
    assert knn_accuracy(x[:200], train_y, x[200:], test_y) == 1.0
    with pytest.raises(InvalidInputError, match="features"):
        knn_accuracy(x[:200], y[:200], x[200:, :5], y[200:])


def test_linear_probe_separable_data_and_chosen_weight_decay():
    x, y = make_blobs(400, 16, centers=5, cluster_std=2.0, random_state=1)
    result = fit_linear_probe(x[:300], y[:300], x[300:], y[300:], max_iter=50)
    assert result.accuracy >= 0.97
    assert result.weight_decay in result.val_accuracy
    assert linear_probe_accuracy(x[:300], y[:300], x[300:], y[300:], weight_decays=(1e-3,), max_iter=50) >= 0.97


def test_linear_probe_needs_the_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8))
    y = rng.integers(0, 3, 200)
    # Random labels cannot be learned: accuracy near chance on held-out data.
    assert linear_probe_accuracy(x[:150], y[:150], x[150:], y[150:], max_iter=30) < 0.6
    with pytest.raises(InvalidInputError, match="2 labelled classes"):
        linear_probe_accuracy(x, np.zeros(200, int), x, y)


def test_fewshot_prototypes_on_blobs_and_on_noise():
    x, y = make_blobs(400, 8, centers=8, cluster_std=1.0, center_box=(-15, 15), random_state=0)
    mean, ci = fewshot_accuracy(x, y, n_way=5, k_shot=5, n_query=10, n_episodes=100, seed=0)
    assert mean >= 0.95 and 0 <= ci < 0.05
    noise = np.random.default_rng(0).normal(size=x.shape)
    chance, ci_noise = fewshot_accuracy(noise, y, n_way=5, k_shot=5, n_query=10, n_episodes=100, seed=0)
    assert abs(chance - 0.2) < 0.05 and ci_noise > 0
    # Same seed, same episodes.
    same = [fewshot_accuracy(x, y, n_episodes=20, n_query=10, seed=3) for _ in range(2)]
    assert same[0] == same[1]
    with pytest.raises(InvalidInputError, match="only 8 qualify"):
        fewshot_accuracy(x, y, n_way=10)
