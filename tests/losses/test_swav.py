"""SwAV swapped-prediction loss vs a direct computation; Sinkhorn code marginals."""

import math

import pytest
import torch

from deepclust.cluster import sinkhorn_knopp
from deepclust.losses import SwAVLoss
from reference_sinkhorn import naive_swav_sinkhorn


def _naive_swav(scores, tau, eps, iters, assign):
    V = len(scores)
    total = 0.0
    for i in assign:
        q = naive_swav_sinkhorn(scores[i], eps, iters)
        sub = 0.0
        for j in range(V):
            if j == i:
                continue
            B, K = scores[j].shape
            for b in range(B):
                row = [float(scores[j][b, k]) / tau for k in range(K)]
                log_z = math.log(sum(math.exp(v) for v in row))
                sub += -sum(float(q[b, k]) * (row[k] - log_z) for k in range(K)) / B
        total += sub / (V - 1)
    return total / len(assign)


def _unit_scores(g, v, b, k, d=5):
    z = torch.nn.functional.normalize(torch.randn(v * b, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    return list((z @ c.t()).chunk(v))


def test_swav_loss_matches_direct_formula_with_multicrop():
    g = torch.Generator().manual_seed(0)
    scores = _unit_scores(g, v=4, b=6, k=5)
    loss = SwAVLoss(temperature=0.1, epsilon=0.05, sinkhorn_iters=3, crops_for_assign=(0, 1))
    got = loss(scores)
    want = _naive_swav(scores, 0.1, 0.05, 3, (0, 1))
    assert got.item() == pytest.approx(want, rel=1e-4)
    # One (V*B, K) tensor, crop-major, gives the same.
    assert loss(torch.cat(scores), n_crops=4).item() == pytest.approx(want, rel=1e-4)


def test_codes_have_equipartition_marginals_and_no_gradient():
    g = torch.Generator().manual_seed(3)
    scores = _unit_scores(g, v=1, b=40, k=4)[0].requires_grad_(True)
    q = SwAVLoss(sinkhorn_iters=50).codes(scores)
    assert not q.requires_grad
    assert torch.allclose(q.sum(dim=1), torch.ones(40, dtype=q.dtype), atol=1e-5)
    # Each prototype receives B/K of the mass (after enough iterations).
    assert torch.allclose(q.sum(dim=0), torch.full((4,), 10.0, dtype=q.dtype), atol=1e-2)
    assert torch.allclose(q.double(), naive_swav_sinkhorn(scores.detach(), 0.05, 50), atol=1e-6)


def test_queue_scores_change_the_codes_only_for_the_batch_rows():
    g = torch.Generator().manual_seed(4)
    scores = _unit_scores(g, v=1, b=6, k=3)[0]
    queue = _unit_scores(g, v=1, b=20, k=3)[0]
    loss = SwAVLoss()
    with_queue = loss.codes(scores, queue)
    assert with_queue.shape == (6, 3)
    want = sinkhorn_knopp(torch.cat([queue, scores]), epsilon=0.05, n_iters=3)[-6:]
    assert torch.allclose(with_queue, want)
    assert not torch.allclose(with_queue, loss.codes(scores))


def test_gradient_flows_to_predictions_only():
    g = torch.Generator().manual_seed(5)
    scores = [s.clone().requires_grad_(True) for s in _unit_scores(g, v=2, b=4, k=3)]
    SwAVLoss(crops_for_assign=(0,))(scores).backward()
    assert scores[0].grad is None     # crop 0 only gives (detached) codes
    assert scores[1].grad.abs().sum() > 0


def test_invalid_crops_for_assign():
    with pytest.raises(ValueError, match="crops_for_assign"):
        SwAVLoss(crops_for_assign=(0, 3))([torch.zeros(2, 3), torch.zeros(2, 3)])
