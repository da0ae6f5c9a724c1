"""Embedding a store with a method's backbone (eval mode, no gradients, batched)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deepclust.core.device import autocast
from deepclust.core.distributed import all_gather_cat, get_rank, get_world_size, is_dist


@torch.no_grad()
def embed_images(
    method: nn.Module,
    images: np.ndarray,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
    indices: np.ndarray | None = None,
    with_logits: bool = False,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """`method.embed(method.preprocess(images[i]))` for the given indices (all by default).

    Returns float32 (n, D); with `with_logits`, also the (n, k) `cluster_logits` (or None
    when the method has no k-way head). The method is put in eval mode and restored.
    """
    device = torch.device(device)
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    was_training = method.training
    method.eval()
    feats, logits = [], []
    has_head = True
    try:
        bar = tqdm(range(0, len(indices), batch_size), desc=desc, disable=not progress, leave=False)
        for start in bar:
            idx = indices[start:start + batch_size]
            batch = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
            with autocast(device, amp_dtype):
                x = method.preprocess(batch)
                feats.append(method.embed(x).float().cpu())
                if with_logits and has_head:
                    out = method.cluster_logits(x)
                    if out is None:
                        has_head = False
                    else:
                        logits.append(out.float().cpu())
    finally:
        method.train(was_training)
    emb = torch.cat(feats).numpy() if feats else np.zeros((0, 0), np.float32)
    if not with_logits:
        return emb
    return emb, (torch.cat(logits).numpy() if has_head and logits else None)


def embed_all_sharded(
    method: nn.Module,
    images: np.ndarray,
    *,
    device: torch.device,
    batch_size: int = 256,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
) -> np.ndarray:
    """The whole store, (N, D) float32, identical on every process.

    Under DDP each rank embeds a contiguous shard and the shards are all-gathered (in rank
    order, so row i is image i); in one process this is `embed_images` on everything.
    """
    if not is_dist():
        return embed_images(method, images, device=device, batch_size=batch_size, amp_dtype=amp_dtype,
                            progress=progress, desc="embed store")
    shard = np.array_split(np.arange(len(images)), get_world_size())[get_rank()]
    local = embed_images(method, images, device=device, batch_size=batch_size, indices=shard,
                         amp_dtype=amp_dtype, progress=progress and get_rank() == 0, desc="embed store")
    return all_gather_cat(torch.from_numpy(local).to(device)).cpu().numpy()
