"""DINO loss, temperature schedule and center update vs direct computations."""

import math

import pytest
import torch

from deepclust.losses import DINOLoss, teacher_temperature


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
    loss = DINOLoss(6, student_temp=0.1, warmup_teacher_temp=0.04, teacher_temp=0.07,
                    warmup_teacher_temp_epochs=10)
    loss.center.copy_(torch.randn(1, 6, generator=g))
    center = loss.center.clone()
    got = loss(students, teachers, epoch=5, update_center=False)
    want = _naive_dino(students, teachers, center, 0.1, 0.055)   # 0.04 + 5/10 * 0.03
    assert got.item() == pytest.approx(want, rel=1e-5)
    assert torch.equal(loss.center, center)


def test_teacher_temperature_warmup_schedule():
    assert teacher_temperature(0, 0.04, 0.07, 30) == pytest.approx(0.04)
    assert teacher_temperature(15, 0.04, 0.07, 30) == pytest.approx(0.055)
    assert teacher_temperature(30, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(99, 0.04, 0.07, 30) == pytest.approx(0.07)
    assert teacher_temperature(0, 0.04, 0.07, 0) == pytest.approx(0.07)


def test_center_update_is_ema_of_teacher_batch_mean():
    g = torch.Generator().manual_seed(1)
    loss = DINOLoss(3, center_momentum=0.9)
    c0 = torch.randn(1, 3, generator=g)
    loss.center.copy_(c0)
    teachers = [torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)]
    loss([teachers[0], teachers[1], torch.randn(4, 3, generator=g)], teachers, epoch=0)
    rows = [teachers[v][b] for v in range(2) for b in range(4)]
    mean = [sum(float(r[k]) for r in rows) / len(rows) for k in range(3)]
    want = [0.9 * float(c0[0, k]) + 0.1 * mean[k] for k in range(3)]
    assert loss.center[0].tolist() == pytest.approx(want, rel=1e-5)


def test_teacher_receives_no_gradient_and_student_does():
    g = torch.Generator().manual_seed(2)
    s = [torch.randn(3, 4, generator=g, requires_grad=True) for _ in range(2)]
    t = [x.detach().clone().requires_grad_(True) for x in s]
    DINOLoss(4)(s, t, epoch=0).backward()
    assert t[0].grad is None and s[1].grad.abs().sum() > 0


def test_needs_two_student_views():
    with pytest.raises(ValueError, match="student"):
        DINOLoss(4)([torch.zeros(2, 4)], [torch.zeros(2, 4)], epoch=0)


def _center_worker(rank, world, port, rows, out_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        loss = DINOLoss(3, center_momentum=0.5)
        loss.update_center(rows[rank])
        if rank == 0:
            torch.save(loss.center.clone(), out_path)
    finally:
        dist.destroy_process_group()


def test_center_update_reduces_over_processes_like_one_big_batch(tmp_path):
    """Two gloo processes with unequal batches (3 and 1 rows) get the center one process
    would get from the 4 rows together: the sum and the count are all-reduced."""
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(7)
    rows = [torch.randn(3, 3, generator=g), torch.randn(1, 3, generator=g)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "center.pt"
    mp.spawn(_center_worker, args=(2, port, rows, str(out)), nprocs=2, join=True)
    single = DINOLoss(3, center_momentum=0.5)
    single.update_center(torch.cat(rows))
    assert torch.allclose(torch.load(out), single.center, atol=1e-6)
    # ... which differs from averaging the two per-process means.
    naive = 0.5 * (rows[0].mean(0) + rows[1].mean(0)) * 0.5
    assert not torch.allclose(single.center[0], naive)
