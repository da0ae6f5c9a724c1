"""torch.distributed helpers that also work in a single process.

Methods call `all_reduce_mean` / `all_gather_cat` for cross-process statistics (DINO's
center, SwAV's Sinkhorn normalisation); without an initialised process group they are
identities, so the same code runs on a laptop and under `torchrun`.

Launch: `torchrun --nproc_per_node=2 -m deepclust train ...`. `init_from_env` reads
RANK / WORLD_SIZE / LOCAL_RANK set by torchrun and picks nccl on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


@torch.no_grad()
def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of `t` over processes (a new tensor; `t` is untouched). Identity in one process."""
    if not is_dist():
        return t.clone()
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


@torch.no_grad()
def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if not is_dist():
        return t.clone()
    out = t.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


@torch.no_grad()
def all_gather_cat(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate `t` from every process along `dim` in rank order (no gradient).

    Tensors may differ in size along `dim` (they are padded for the collective and
    trimmed after); other dimensions must agree. Identity in one process.
    """
    if not is_dist():
        return t
    world = get_world_size()
    t = t.detach().contiguous()
    size = torch.tensor([t.shape[dim]], device=t.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    sizes_int = [int(s.item()) for s in sizes]
    longest = max(sizes_int)
    if t.shape[dim] < longest:
        pad_shape = list(t.shape)
        pad_shape[dim] = longest - t.shape[dim]
        t = torch.cat([t, t.new_zeros(pad_shape)], dim=dim)
    gathered = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(gathered, t)
    return torch.cat([g.narrow(dim, 0, n) for g, n in zip(gathered, sizes_int)], dim=dim)


class _GatherWithGrad(torch.autograd.Function):
    """All-gather whose backward returns this process' slice of the summed gradient
    (the gradient of a loss over the global batch with respect to the local rows)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        world = get_world_size()
        ctx.rank, ctx.rows = get_rank(), t.shape[0]
        gathered = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(gathered, t.contiguous())
        return torch.cat(gathered)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def all_gather_with_grad(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t (B, ...)`` from every process along dim 0 in rank order, keeping the
    gradient (CLIP / SimCLR-style losses over the global batch). Every process must pass the
    same ``B``. Identity in one process.

    Each process computes the loss on the whole gathered batch; the backward sums the
    gradients of all processes and hands each its own rows, so with DDP's gradient averaging
    the update equals one process training on the concatenated batch with the same loss."""
    if not is_dist() or get_world_size() == 1:
        return t
    out: torch.Tensor = _GatherWithGrad.apply(t)
    return out


def init_from_env(device: str = "auto") -> torch.device:
    """Initialise the process group when launched by torchrun; return this process' device.

    In a plain `python` run (no WORLD_SIZE in the environment, or WORLD_SIZE=1) nothing
    is initialised. `device` is resolved by `deepclust.core.device.resolve_device` (auto, cpu,
    cuda, cuda:N, mps; an unknown or absent device is a DeepclustError); under torchrun each
    process takes the GPU of its LOCAL_RANK.
    """
    from deepclust.core.device import resolve_device

    resolved = resolve_device(device)
    use_cuda = resolved.type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not is_dist():
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
    if use_cuda and world > 1:
        return torch.device("cuda", local_rank)
    if use_cuda and resolved.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return resolved


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()
