"""DINOv2's image-level terms: Sinkhorn-Knopp teacher centring (rows 1/B, columns 1/K
before the rescaling by B) and KoLeo per global crop (neighbours within a crop only)."""

from __future__ import annotations

import pytest
import torch

from deepclust.losses.dino import DINOLoss
from deepclust.losses.dinov2 import DINOv2ClsLoss, koleo_per_crop
from deepclust.losses.koleo import KoLeoLoss


def loop_sinkhorn(scores, temp, n_iters):
    """DINOv2's sinkhorn_knopp_teacher, written out: Q (K, B)."""
    q = torch.exp(scores.double() / temp).t()
    k, b = q.shape
    q = q / q.sum()
    for _ in range(n_iters):
        for i in range(k):
            q[i] = q[i] / q[i].sum() / k
        for j in range(b):
            q[:, j] = q[:, j] / q[:, j].sum() / b
    return q.t()   # before the rescaling Q *= B


def test_sinkhorn_teacher_matches_the_loop_rows_sum_to_1_over_b_and_columns_to_1_over_k():
    torch.manual_seed(0)
    scores = torch.randn(12, 5) * 0.3
    loss = DINOv2ClsLoss(5, centering="sinkhorn")
    got = loss.teacher_probs(scores, 0.1)
    want = loop_sinkhorn(scores, 0.1, 3)
    assert torch.allclose(got.double() / 12, want, atol=1e-6)
    before = got.double() / 12
    assert torch.allclose(before.sum(1), torch.full((12,), 1 / 12, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(before.sum(0), torch.full((5,), 1 / 5, dtype=torch.float64), atol=0.05)  # 3 iterations: close
    converged = DINOv2ClsLoss(5, centering="sinkhorn", sinkhorn_iters=200).teacher_probs(scores, 0.1).double() / 12
    assert torch.allclose(converged.sum(0), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-6)


def test_center_mode_is_dino_and_sinkhorn_mode_leaves_the_center_alone():
    torch.manual_seed(1)
    students = [torch.randn(6, 8) for _ in range(3)]
    teachers = [torch.randn(6, 8) for _ in range(2)]
    a, b = DINOLoss(8), DINOv2ClsLoss(8)
    assert a(students, teachers, teacher_temp=0.04).item() == pytest.approx(
        b(students, teachers, teacher_temp=0.04).item())
    assert torch.equal(a.center.value, b.center.value)
    sk = DINOv2ClsLoss(8, centering="sinkhorn")
    sk(students, teachers, teacher_temp=0.04)
    assert torch.all(sk.center.value == 0)


def test_koleo_per_crop_searches_neighbours_within_each_crop_and_sums_the_crops():
    torch.manual_seed(2)
    crop0 = torch.randn(5, 4, requires_grad=True)
    crop1 = (crop0.detach() + 1e-3 * torch.randn(5, 4)).requires_grad_(True)  # near-duplicates of crop 0
    x = torch.cat([crop0, crop1])
    got = koleo_per_crop(x, 2)
    koleo = KoLeoLoss()
    want = koleo(crop0) + koleo(crop1)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # across crops the duplicates would be nearest neighbours: a much larger loss
    assert koleo(x).item() > got.item() / 2 + 2
    # loop: -mean log distance to the nearest other row of the same crop
    for crop in (crop0, crop1):
        z = torch.nn.functional.normalize(crop.detach(), dim=1)
        d = [min(float(torch.dist(z[i], z[j])) for j in range(5) if j != i) for i in range(5)]
        assert koleo(crop).item() == pytest.approx(-sum(torch.log(torch.tensor(d)).tolist()) / 5, rel=1e-4)
    got.backward()
    assert crop0.grad is not None and crop1.grad is not None


def test_koleo_per_crop_needs_equal_crops():
    with pytest.raises(ValueError):
        koleo_per_crop(torch.randn(5, 3), 2)
