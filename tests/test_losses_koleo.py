"""KoLeo regulariser vs the direct nearest-neighbour formula."""

import math

import pytest
import torch

from deepclust.losses import KoLeoLoss


def _naive_koleo(x, eps=1e-8):
    rows = [[float(v) for v in r] for r in x]
    rows = [[v / max(math.sqrt(sum(u * u for u in r)), eps) for v in r] for r in rows]
    total = 0.0
    for i, a in enumerate(rows):
        d = min(math.sqrt(sum((p - q) ** 2 for p, q in zip(a, b))) for j, b in enumerate(rows) if j != i)
        total += math.log(d + eps)
    return -total / len(rows)


def test_koleo_matches_formula():
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0)) * 5
    assert KoLeoLoss()(x).item() == pytest.approx(_naive_koleo(x), rel=1e-5)


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


def test_koleo_needs_two_rows():
    with pytest.raises(ValueError, match="n >= 2"):
        KoLeoLoss()(torch.zeros(1, 3))
