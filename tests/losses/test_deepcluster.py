"""DeepCluster loss vs a direct computation of the weighted cross-entropy formula."""

import math

import numpy as np
import pytest
import torch

from deepclust.losses import DeepClusterLoss, inverse_size_weights


def _naive_weighted_ce(logits, labels, weights):
    num = den = 0.0
    for n in range(logits.shape[0]):
        row = [float(v) for v in logits[n]]
        log_z = math.log(sum(math.exp(v) for v in row))
        w = 1.0 if weights is None else float(weights[labels[n]])
        num += w * (log_z - row[int(labels[n])])
        den += w
    return num / den


def test_unweighted_loss_matches_formula():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 4, generator=g) * 3
    labels = torch.tensor([0, 1, 1, 3, 2, 0, 1])
    got = DeepClusterLoss()(logits, labels)
    assert got.item() == pytest.approx(_naive_weighted_ce(logits, labels, None), rel=1e-5)


def test_weighted_loss_matches_formula_and_differs_from_plain():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(9, 3, generator=g) * 2
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 2])
    weights = inverse_size_weights(labels.numpy(), 3)
    got = DeepClusterLoss()(logits, labels, weights)
    assert got.item() == pytest.approx(_naive_weighted_ce(logits, labels, weights), rel=1e-5)
    assert abs(got.item() - DeepClusterLoss()(logits, labels).item()) > 1e-3


def test_inverse_size_weights_equalise_cluster_mass():
    labels = np.array([0] * 6 + [1] * 3 + [3] * 1)   # cluster 2 empty
    w = inverse_size_weights(labels, 4).numpy()
    assert w[2] == 0
    mass = [w[c] * (labels == c).sum() for c in (0, 1, 3)]
    assert np.allclose(mass, mass[0])
    # Normalised so the average weight per image is 1.
    assert w[labels].mean() == pytest.approx(1.0)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="logits"):
        DeepClusterLoss()(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long))
