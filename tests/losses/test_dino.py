"""DINO loss vs a direct computation; the teacher temperature is an argument (the schedule
is the loop's, tested in tests/core/test_schedules.py); the center (tests/losses/test_center.py)."""

import math

import pytest
import torch

from deepclust.losses import DINOLoss


def _softmax(row):
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


def _naive_dino(students, teachers, center, tau_s, tau_t):
    total, pairs = 0.0, 0
    for it, t in enumerate(teachers):
        for iv, s in enumerate(students):
            if iv == it:
                continue
            B, K = s.shape
            h = 0.0
            for b in range(B):
                p_t = _softmax([(float(t[b, k]) - float(center[0, k])) / tau_t for k in range(K)])
                p_s = _softmax([float(s[b, k]) / tau_s for k in range(K)])
                h += -sum(p_t[k] * math.log(p_s[k]) for k in range(K))
            total += h / B
            pairs += 1
    return total / pairs


def test_loss_matches_formula_with_center_and_local_crops():
    g = torch.Generator().manual_seed(0)
    students = [torch.randn(5, 6, generator=g) for _ in range(4)]   # 2 global + 2 local
    teachers = [torch.randn(5, 6, generator=g) for _ in range(2)]
    loss = DINOLoss(6, student_temp=0.1)
    loss.center.value.copy_(torch.randn(1, 6, generator=g))
    center = loss.center.value.clone()
    got = loss(students, teachers, teacher_temp=0.055, update_center=False)
    want = _naive_dino(students, teachers, center, 0.1, 0.055)
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert torch.equal(loss.center.value, center)
    # the temperature passed in is the one used
    other = loss(students, teachers, teacher_temp=0.07, update_center=False)
    assert other.item() == pytest.approx(_naive_dino(students, teachers, center, 0.1, 0.07), rel=1e-5)
    with pytest.raises(ValueError, match="teacher_temp"):
        loss(students, teachers, teacher_temp=0.0)


def test_center_update_is_ema_of_teacher_batch_mean():
    g = torch.Generator().manual_seed(1)
    loss = DINOLoss(3, center_momentum=0.9)
    c0 = torch.randn(1, 3, generator=g)
    loss.center.value.copy_(c0)
    teachers = [torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)]
    loss([teachers[0], teachers[1], torch.randn(4, 3, generator=g)], teachers, teacher_temp=0.04)
    rows = [teachers[v][b] for v in range(2) for b in range(4)]
    mean = [sum(float(r[k]) for r in rows) / len(rows) for k in range(3)]
    want = [0.9 * float(c0[0, k]) + 0.1 * mean[k] for k in range(3)]
    assert loss.center.value[0].tolist() == pytest.approx(want, rel=1e-5)


def test_teacher_receives_no_gradient_and_student_does():
    g = torch.Generator().manual_seed(2)
    s = [torch.randn(3, 4, generator=g, requires_grad=True) for _ in range(2)]
    t = [x.detach().clone().requires_grad_(True) for x in s]
    DINOLoss(4)(s, t, teacher_temp=0.04).backward()
    assert t[0].grad is None and s[1].grad.abs().sum() > 0


def test_needs_two_student_views():
    with pytest.raises(ValueError, match="student"):
        DINOLoss(4)([torch.zeros(2, 4)], [torch.zeros(2, 4)], teacher_temp=0.04)
