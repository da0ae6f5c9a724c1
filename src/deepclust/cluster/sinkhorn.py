"""Sinkhorn-Knopp equipartition (SwAV) and balanced cluster assignment.

SwAV (Caron et al., NeurIPS 2020, Alg. 1 / Sec. 3.1) turns prototype scores into soft
codes ``Q`` that solve ``max_Q Tr(Q^T C^T Z) + eps H(Q)`` under the constraint that every
prototype is used equally often over the batch. With ``P = exp(scores / eps)^T`` (K x B)
the solution is ``diag(u) P diag(v)``, found by alternately normalising

* rows (prototypes) to sum ``1/K`` and
* columns (samples) to sum ``1/B``,

then scaling by ``B`` so that each sample's code sums to 1. `sinkhorn_knopp` follows the
reference code line by line, including its distributed version where the per-prototype
sums are all-reduced over processes (so a 2-process run equals one process on the
concatenated batch).

Numerical stability: the scores are divided by ``eps`` (0.05 -> factor 20), so ``exp`` can
overflow. We subtract the *global* maximum score before ``exp`` (max all-reduced across
processes) and compute in float64. A constant factor on ``P`` is removed exactly by the first
normalisation, so this changes nothing mathematically; float64 keeps samples whose scores are
up to ``~700 * eps`` below the global maximum from underflowing to an all-zero column
(which would give NaN). (Subtracting a per-sample max would *not* be equivalent after a
finite number of iterations, because the row normalisation comes first.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from deepclust.cluster.validation import InvalidInputError, check_features


def _distributed(world_size_aware: bool) -> bool:
    return world_size_aware and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def _sinkhorn(scores: torch.Tensor, epsilon: float, n_iters: int, distributed: bool,
              dtype: torch.dtype) -> torch.Tensor:
    if scores.ndim != 2 or scores.shape[1] < 1:
        raise InvalidInputError(f"scores must be a 2-D tensor (batch B, prototypes K), "
                                f"got shape {tuple(scores.shape)}.")
    if not epsilon > 0:
        raise InvalidInputError(f"epsilon must be > 0, got {epsilon}.")
    if n_iters < 1:
        # The last step of each iteration normalises the samples; with none the rows would
        # not be distributions.
        raise InvalidInputError(f"n_iters must be >= 1, got {n_iters}.")
    s = scores.detach().to(dtype)
    # Global max (over all processes) so every process uses the same constant shift.
    # An empty local batch contributes -inf.
    shift = s.max() if s.numel() else torch.tensor(float("-inf"), dtype=dtype, device=s.device)
    if distributed:
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
    q = torch.exp((s - shift) / epsilon).t()  # (K, B_local): SwAV's notation
    n_prototypes = q.shape[0]
    # Total mass and global batch size in one collective. The batch sizes need not be
    # equal across processes (SwAV assumes they are and uses B_local * world_size).
    totals = torch.stack([q.sum(), torch.tensor(float(q.shape[1]), dtype=dtype, device=q.device)])
    if distributed:
        dist.all_reduce(totals)
    sum_q, batch = totals[0], totals[1]
    q /= sum_q
    for _ in range(n_iters):
        # Rows: total weight per prototype must be 1/K (sums over samples of every process).
        sum_of_rows = q.sum(dim=1, keepdim=True)
        if distributed:
            dist.all_reduce(sum_of_rows)
        q /= sum_of_rows
        q /= n_prototypes
        # Columns: total weight per sample must be 1/B (local: each column lives on one process).
        q /= q.sum(dim=0, keepdim=True)
        q /= batch
    q *= batch  # columns sum to 1: each sample's code is a distribution over prototypes
    return q.t()


def sinkhorn_knopp(
    scores: torch.Tensor, epsilon: float = 0.05, n_iters: int = 3, world_size_aware: bool = True
) -> torch.Tensor:
    """SwAV's Sinkhorn-Knopp codes for one batch.

    Args:
        scores: ``(B, K)`` similarities of B samples to K prototypes (SwAV: dot products of
            L2-normalised embeddings and prototypes, so in ``[-1, 1]``). No gradient flows.
        epsilon: entropy regularisation; smaller is closer to hard assignment (SwAV: 0.05).
        n_iters: Sinkhorn iterations, at least 1 (SwAV: 3).
        world_size_aware: if ``torch.distributed`` is initialised with more than one process,
            all-reduce the sums over samples so the equipartition holds over the global batch.

    Returns:
        ``(B, K)`` codes in the dtype of ``scores``: each row is a distribution over
        prototypes (sums to 1), as SwAV's ``Q * B``; over the (global) batch every prototype
        receives about ``B/K`` of the mass, exactly so after the iterations converge. Computed
        in float64 with a global max shift (see module docstring).
    """
    out_dtype = scores.dtype if scores.dtype.is_floating_point else torch.float32
    codes = _sinkhorn(scores, float(epsilon), int(n_iters), _distributed(world_size_aware), torch.float64)
    return codes.to(out_dtype)


def balanced_assign(
    x: np.ndarray,
    centroids: np.ndarray,
    epsilon: float = 0.05,
    n_iters: int = 50,
    *,
    metric: str = "cosine",
) -> np.ndarray:
    """Assign rows of ``x`` to ``centroids`` with near-equal cluster sizes.

    Runs Sinkhorn-Knopp on row-to-centroid scores and takes each row's arg-max code. Sizes
    are near-equal, not exactly equal, because the arg-max rounds soft codes; more
    iterations and a smaller ``epsilon`` bring them closer to ``N/k``. Single-process.

    Scores are scale-free so one ``epsilon`` suits any features:

    * ``metric="cosine"`` (default; spherical k-means, SwAV prototypes): cosine similarity of
      L2-normalised rows and centroids, in ``[-1, 1]``.
    * ``metric="euclidean"`` (plain k-means centroids): ``-||x - c||^2 / median(||x - c||^2)``.

    Each row's scores are shifted so its best score is 0. This changes nothing at the
    Sinkhorn fixed point (a per-sample factor is absorbed by the column scaling) and keeps a
    far-away row from underflowing to all zeros.

    Args:
        x: ``(N, D)`` features. centroids: ``(k, D)``.
        epsilon: entropy regularisation (smaller = closer to the hard balanced optimum).
        n_iters: Sinkhorn iterations.
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(N,)`` int64 labels in ``[0, k)``.
    """
    x = check_features(x, "x")
    centroids = check_features(centroids, "centroids")
    if centroids.shape[1] != x.shape[1]:
        raise InvalidInputError(
            f"x has {x.shape[1]} features but centroids have {centroids.shape[1]}; they must match."
        )
    xt, ct = torch.from_numpy(x), torch.from_numpy(centroids)
    if metric == "cosine":
        scores = torch.nn.functional.normalize(xt, dim=1) @ torch.nn.functional.normalize(ct, dim=1).T
    elif metric == "euclidean":
        sq_dist = torch.cdist(xt.double(), ct.double()).pow(2)
        scores = (-sq_dist / sq_dist.median().clamp_min(1e-12)).float()
    else:
        raise InvalidInputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}.")
    scores = scores - scores.max(dim=1, keepdim=True).values
    # After the shift nothing can overflow; float32 halves the memory of the (N, k) matrix
    # for large N, where a last-bit difference cannot change an arg-max that matters.
    dtype = torch.float64 if x.shape[0] * centroids.shape[0] <= 10_000_000 else torch.float32
    codes = _sinkhorn(scores, float(epsilon), int(n_iters), False, dtype)
    return codes.argmax(dim=1).numpy().astype(np.int64)
