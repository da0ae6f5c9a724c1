"""Helpers the loop calls once per run or once per epoch: seeding, store checks, the
epoch's sample order, DDP wrapping, settings changed on resume, the collapse decision and
the whole-store embedding (DDP-sharded) through `deepclust.models.encoder.embed_images`."""

from __future__ import annotations

import inspect
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deepclust.core.distributed import all_gather_cat, get_rank, get_world_size, is_dist
from deepclust.errors import CollapseError, DataError
from deepclust.methods.base import Method
from deepclust.methods.state import TrainContext
from deepclust.models.encoder import Encoder, embed_images
from deepclust.train import checkpoint as ckpt
from deepclust.train.config import TrainConfig
from deepclust.train.monitor import CollapseStats, check_collapse

log = logging.getLogger("deepclust.train")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_store(store: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images uint8 (N, S, S, 3), labels (N,) or None)`` of an ImageStore-like object."""
    images = getattr(store, "images", None)
    if images is None or images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DataError("train() needs an ImageStore whose images are uint8 (N, S, S, 3); "
                        "load it with deepclust.data.store.load_images")
    labels = getattr(store, "labels", None)
    return images, (None if labels is None else np.asarray(labels))


def epoch_order(method: Method, ctx: TrainContext, n_images: int, seed: int) -> np.ndarray:
    """(steps, per-process batch) indices of this process for epoch `ctx.epoch`.

    The method's own order if it gives one (e.g. uniform over pseudo-labels), else a
    permutation seeded by (seed, epoch); the tail that does not fill a global batch is
    dropped; rank r takes column block r of every global batch.
    """
    order = method.epoch_indices(ctx)
    if order is None:
        order = np.random.default_rng([seed, ctx.epoch]).permutation(n_images)
    order = np.asarray(order, dtype=np.int64)
    need = ctx.steps_per_epoch * ctx.batch_size * ctx.world_size
    if len(order) < need:
        order = np.resize(order, need)
    order = order[:need].reshape(ctx.steps_per_epoch, ctx.world_size, ctx.batch_size)
    return order[:, ctx.rank]


def embed_store_sharded(encoder: Encoder, images: np.ndarray, *, device: torch.device, batch_size: int = 256,
                        amp_dtype: torch.dtype | None = None, progress: bool = False) -> np.ndarray:
    """The whole store, (N, D) float32, identical on every process: under DDP each rank
    embeds a contiguous shard and the shards are all-gathered in rank order."""
    if not is_dist():
        return embed_images(encoder, images, device=device, batch_size=batch_size, amp_dtype=amp_dtype,
                            progress=progress, desc="embed store")
    shard = np.array_split(np.arange(len(images)), get_world_size())[get_rank()]
    local = embed_images(encoder, images, device=device, batch_size=batch_size, indices=shard,
                         amp_dtype=amp_dtype, progress=progress and get_rank() == 0, desc="embed store")
    return all_gather_cat(torch.from_numpy(local).to(device)).cpu().numpy()


def wrap_ddp(model: nn.Module, method: Method, device: torch.device) -> nn.Module:
    """DistributedDataParallel without per-forward buffer broadcasts (queues are per process;
    methods synchronise shared statistics such as DINO's center themselves)."""
    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    no_sync: dict[str, Any] = ({"forward_sync_buffers": False} if "forward_sync_buffers" in params
                               else {"broadcast_buffers": False})
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=method.ddp_find_unused_parameters, **no_sync)


def gather_rng() -> list[Any]:
    """Every process' RNG states (rank order) for the checkpoint; a collective under DDP."""
    mine = ckpt.get_rng_states()
    if not is_dist():
        return [mine]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, mine)
    return out


def warn_changed_settings(out_dir: Path, cfg: TrainConfig, world: int, state: dict[str, Any]) -> None:
    """Resuming is exact only with the settings of the run (more epochs excepted)."""
    saved = ckpt.read_config(out_dir)
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in ("epochs", "device", "num_workers", "log_every", "tensorboard")
                     and saved.get(k) != now[k])
    if state["extra"].get("world_size", world) != world:
        changed.append("world_size")
        saved["world_size"], now["world_size"] = state["extra"]["world_size"], world
    if saved.get("epochs") != now["epochs"]:
        log.warning("resuming %s with epochs %s -> %s: every schedule (learning rate, weight decay, teacher "
                    "momentum and temperature) is re-stretched over the new total, so the learning rate jumps "
                    "instead of continuing its curve; resume with --epochs %s for an exact continuation",
                    out_dir, saved.get("epochs"), now["epochs"], saved.get("epochs"))
    if changed:
        log.warning("resuming %s with changed settings %s: the run is no longer an exact continuation",
                    out_dir, ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed))


def raise_if_collapsed(stats: CollapseStats | None, epoch: int, cfg: TrainConfig, device: torch.device) -> None:
    """Rank 0 judges (after the checkpoint is saved); every process stops together."""
    error = None
    if stats is not None:
        try:
            check_collapse(stats, epoch=epoch, k=cfg.k, raise_error=cfg.collapse_check)
        except CollapseError as exc:
            error = exc
    if is_dist():
        flag = torch.tensor([0.0 if error is None else 1.0], device=device)
        dist.broadcast(flag, src=0)
        if flag.item() > 0 and error is None:
            error = CollapseError(f"training collapsed at epoch {epoch + 1} (see the message of rank 0)")
    if error is not None:
        raise error
