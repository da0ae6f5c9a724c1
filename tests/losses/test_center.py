"""The reusable Center (DINO's teacher center): EMA of the batch mean, subtraction, and the
all-reduce over processes that makes unequal batches count row by row."""

import pytest
import torch

from deepclust.losses import Center


def test_center_is_an_ema_of_the_batch_mean_and_subtracts():
    g = torch.Generator().manual_seed(3)
    center = Center(4, momentum=0.8)
    c0 = torch.randn(1, 4, generator=g)
    center.value.copy_(c0)
    x = torch.randn(5, 4, generator=g)
    center.update(x)
    want = [0.8 * float(c0[0, k]) + 0.2 * sum(float(x[b, k]) for b in range(5)) / 5 for k in range(4)]
    assert center.value[0].tolist() == pytest.approx(want, rel=1e-5)
    torch.testing.assert_close(center(x), x - center.value)
    assert "value" in center.state_dict()
    with pytest.raises(ValueError, match="momentum"):
        Center(3, momentum=1.5)


def _center_worker(rank, world, port, rows, out_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        center = Center(3, momentum=0.5)
        center.update(rows[rank])
        if rank == 0:
            torch.save(center.value.clone(), out_path)
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
    single = Center(3, momentum=0.5)
    single.update(torch.cat(rows))
    assert torch.allclose(torch.load(out), single.value, atol=1e-6)
    # ... which differs from averaging the two per-process means.
    naive = 0.5 * (rows[0].mean(0) + rows[1].mean(0)) * 0.5
    assert not torch.allclose(single.value[0], naive)
