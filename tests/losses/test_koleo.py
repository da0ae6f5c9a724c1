"""KoLeo regulariser vs a direct computation of DINOv2's formula: nearest neighbour by inner
product (diagonal -1), distance ||x_i - x_j + eps|| (torch PairwiseDistance), -mean log(d + eps)."""

import math

import pytest
import torch

from deepclust.losses import KoLeoLoss


def _naive_koleo(x, eps=1e-8):
    rows = [[float(v) for v in r] for r in x]
    rows = [[v / max(math.sqrt(sum(u * u for u in r)), eps) for v in r] for r in rows]
    n = len(rows)
    total = 0.0
    for i, a in enumerate(rows):
        dots = [sum(p * q for p, q in zip(a, b)) if j != i else -1.0 for j, b in enumerate(rows)]
        j = max(range(n), key=lambda t: (dots[t], -t))            # first index of the max, as torch.max
        d = math.sqrt(sum((p - q + eps) ** 2 for p, q in zip(a, rows[j])))
        total += math.log(d + eps)
    return -total / n


def test_koleo_matches_formula():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0)) * 5
    assert KoLeoLoss()(x).item() == pytest.approx(_naive_koleo(x), rel=1e-5)


def test_koleo_duplicate_rows_use_the_pairwise_distance_eps():
    """Duplicates are at distance ||0 + 1e-8|| = 1e-8 * sqrt(D), not 0 (which would give -log(1e-8) exactly)."""
    x = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]], dtype=torch.float64)
    got = KoLeoLoss()(x).item()
    want = _naive_koleo(x)
    assert got == pytest.approx(want, rel=1e-6)
    dup = -math.log(1e-8 * 2 + 1e-8)
    assert want == pytest.approx((2 * dup - math.log(math.sqrt(2) + 1e-8)) / 3, rel=1e-6)


def test_koleo_batch_of_one_is_finite():
    x = torch.randn(1, 5, requires_grad=True)
    loss = KoLeoLoss()(x)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(_naive_koleo(x.detach()), rel=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_koleo_prefers_spread_points_and_pushes_neighbours_apart():
    spread = torch.eye(4)
    bunched = torch.tensor([[1.0, 0.01, 0, 0], [1.0, -0.01, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0]])
    assert KoLeoLoss()(spread) < KoLeoLoss()(bunched)
    x = bunched.clone().requires_grad_(True)
    KoLeoLoss()(x).backward()
    with torch.no_grad():
        moved = torch.nn.functional.normalize(x - 0.01 * x.grad, dim=1)
    assert (moved[0] - moved[1]).norm() > (torch.nn.functional.normalize(bunched, dim=1)[0]
                                          - torch.nn.functional.normalize(bunched, dim=1)[1]).norm()


def test_koleo_rejects_non_matrices():
    with pytest.raises(ValueError, match="n >= 1"):
        KoLeoLoss()(torch.zeros(0, 3))
