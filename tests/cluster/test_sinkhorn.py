"""SwAV's Sinkhorn-Knopp against a literal loop version of Algorithm 1; marginals; gloo 2-process run."""

from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from deepclust.cluster import InvalidInputError, balanced_assign, sinkhorn_knopp
from reference_sinkhorn import naive_swav_sinkhorn


@pytest.mark.parametrize("n_iters, eps", [(1, 0.05), (3, 0.05), (10, 0.2)])
def test_matches_literal_algorithm(n_iters, eps):
    scores = torch.rand(7, 4, generator=torch.Generator().manual_seed(n_iters)) * 2 - 1
    expected = naive_swav_sinkhorn(scores.double(), eps, n_iters)
    codes = sinkhorn_knopp(scores, epsilon=eps, n_iters=n_iters)
    assert codes.shape == (7, 4) and codes.dtype == torch.float32
    torch.testing.assert_close(codes.double(), expected, rtol=1e-5, atol=1e-7)


def test_one_iteration_already_gives_distributions_per_sample():
    codes = sinkhorn_knopp(torch.randn(5, 3), 0.1, n_iters=1)
    torch.testing.assert_close(codes.sum(1), torch.ones(5))
    assert (codes >= 0).all()


def test_marginals_converge_to_uniform():
    scores = torch.rand(60, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores[:, 0] += 0.5  # one prototype is preferred by everyone
    codes = sinkhorn_knopp(scores, epsilon=0.1, n_iters=300)
    torch.testing.assert_close(codes.sum(1), torch.ones(60), atol=1e-5, rtol=0)
    torch.testing.assert_close(codes.sum(0), torch.full((6,), 10.0), atol=1e-3, rtol=0)
    # Without Sinkhorn the preferred prototype would take most of the mass.
    assert torch.softmax(scores / 0.1, 1).sum(0)[0] > 20


def test_large_scores_do_not_overflow():
    scores = torch.tensor([[100.0, 99.0], [98.0, 100.0], [97.0, 96.0]])  # exp(100/0.05) overflows float64
    codes = sinkhorn_knopp(scores, epsilon=0.05, n_iters=3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(3))


def test_rejects_bad_input():
    with pytest.raises(InvalidInputError, match="2-D"):
        sinkhorn_knopp(torch.randn(5))
    with pytest.raises(InvalidInputError, match="epsilon"):
        sinkhorn_knopp(torch.randn(5, 2), epsilon=0.0)
    with pytest.raises(InvalidInputError, match="n_iters"):
        sinkhorn_knopp(torch.randn(5, 2), n_iters=0)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_balanced_assign_equalises_sizes(metric):
    rng = np.random.default_rng(0)
    centroids = np.eye(4, dtype=np.float32) * 3
    # 70% of the points sit near centroid 0.
    owner = rng.choice(4, size=400, p=[0.7, 0.1, 0.1, 0.1])
    x = centroids[owner] + rng.normal(scale=1.0, size=(400, 4)).astype(np.float32)
    nearest_sizes = np.bincount(((x[:, None] - centroids[None]) ** 2).sum(-1).argmin(1), minlength=4)
    labels = balanced_assign(1000 * x, 1000 * centroids, epsilon=0.05, n_iters=100, metric=metric)  # scale-free
    sizes = np.bincount(labels, minlength=4)
    assert labels.dtype == np.int64 and sizes.sum() == 400
    assert nearest_sizes.max() > 200  # plain assignment is very unbalanced
    assert np.abs(sizes - 100).max() <= 15
    # Points keep their own centroid where balance allows: the small clusters' points stay put.
    small = owner != 0
    assert (labels[small] == owner[small]).mean() > 0.8


def test_balanced_assign_survives_far_outliers():
    x = np.array([[0.0, 0.0], [0.1, 0.0], [1e4, 1e4], [0.0, 0.1]], dtype=np.float32)
    labels = balanced_assign(x, np.array([[0.0, 0.0], [1.0, 1.0]], np.float32), metric="euclidean")
    # Without the per-row shift the outlier's scores underflow to 0 and every code is NaN.
    assert labels.tolist() == [0, 0, 1, 0]
    with pytest.raises(InvalidInputError, match="metric"):
        balanced_assign(x, x[:2], metric="manhattan")
    with pytest.raises(InvalidInputError, match="must match"):
        balanced_assign(x, np.ones((3, 5)))


def _worker(rank: int, world_size: int, tmp: str, scores: torch.Tensor, splits: list[int]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=60))  # fail instead of hanging if a peer dies
    try:
        start = sum(splits[:rank])
        local = scores[start : start + splits[rank]]
        np.save(f"{tmp}/aware{rank}.npy", sinkhorn_knopp(local, epsilon=0.05, n_iters=3).numpy())
        unaware = sinkhorn_knopp(local, epsilon=0.05, n_iters=3, world_size_aware=False)
        np.save(f"{tmp}/local{rank}.npy", unaware.numpy())
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one_process_on_concatenated_batch(tmp_path):
    scores = torch.rand(12, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    splits = [5, 7]  # unequal halves: the global batch size is all-reduced, not assumed
    mp.spawn(_worker, args=(2, str(tmp_path), scores, splits), nprocs=2, join=True)
    result = {f"{kind}{rank}": np.load(tmp_path / f"{kind}{rank}.npy")
              for kind in ("aware", "local") for rank in (0, 1)}
    together = sinkhorn_knopp(scores, epsilon=0.05, n_iters=3).numpy()
    aware = np.concatenate([result["aware0"], result["aware1"]])
    np.testing.assert_allclose(aware, together, rtol=1e-5, atol=1e-7)
    # Without the all-reduce each process balances only its own half, which differs.
    local = np.concatenate([result["local0"], result["local1"]])
    assert np.abs(local - together).max() > 1e-3
