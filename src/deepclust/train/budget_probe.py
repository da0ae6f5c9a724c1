"""The time budget's probe (`deepclust.train.budget`, step 1): how long a step, the per-epoch
work before the steps and after them take, measured on a copy of the freshly built method.

    probe(method, cfg, ctx, clip_grad=...) -> Estimate

The copy runs its epoch hook on a subset of the store and a few optimisation steps (1 untimed,
then timed) with its own optimiser, embeds a few images and writes one checkpoint to a
temporary folder; every RNG is restored afterwards, so the run itself is unaffected.
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepclust.core.device import autocast
from deepclust.methods.base import Method, StepState
from deepclust.methods.state import TrainContext
from deepclust.models.encoder import embed_images
from deepclust.train import checkpoint as ckpt
from deepclust.train.config import TrainConfig
from deepclust.train.optim import build_optimizer
from deepclust.train.setup import embed_store_sharded, epoch_order
from deepclust.train.step import optimizer_step

PROBE_STEPS = 3
POST_MARGIN = 1.5      # the probe's per-epoch overhead estimate x this


@dataclass
class Estimate:
    """Seconds per optimisation step, and per epoch before (``pre``) and after (``post``) the steps."""

    step_s: float
    pre_s: float
    post_s: float


def _eval_images(cfg: TrainConfig, n: int, labelled: bool) -> float:
    """Images the online evaluation embeds per epoch, on average."""
    knn = min(n, cfg.eval_samples) / cfg.knn_every if labelled and cfg.knn_every > 0 else 0.0
    return min(n, cfg.monitor_samples) + knn


def probe(method: Method, cfg: TrainConfig, ctx: TrainContext, *, clip_grad: float) -> Estimate:
    """Time a copy of `method` on a subset of ``ctx.images`` (module doc, 1); RNG states restored."""
    rng_states = ckpt.get_rng_states()
    try:
        return _probe(copy.deepcopy(method), cfg, ctx, clip_grad=clip_grad)
    finally:
        ckpt.set_rng_states(rng_states)


def _probe(method: Method, cfg: TrainConfig, ctx: TrainContext, *, clip_grad: float) -> Estimate:
    """`method` is a copy of the run's, after its ``on_train_start`` (neighbours, tokenizer, ...).
    A method with an epoch hook (DeepCluster) runs it on a subset whose indices are its own;
    any other sees its batches under their store indices."""
    n, batch = len(ctx.images), ctx.batch_size * ctx.world_size
    n_sub = min(n, max(512, 4 * batch))
    idx = np.sort(np.random.default_rng([cfg.seed, 17]).choice(n, n_sub, replace=False))
    sub = np.ascontiguousarray(ctx.images[idx])
    hook = type(method).on_epoch_start is not Method.on_epoch_start
    labels = None if ctx.labels is None else np.asarray(ctx.labels)[idx]
    sub_ctx = dataclasses.replace(ctx, epoch=0, step=0, steps_per_epoch=max(1, n_sub // batch), images=sub,
                                  labels=labels, logs={}, reinitialized=[])
    sub_ctx.embed_all = lambda: embed_store_sharded(method.encoder(), sub, device=ctx.device,
                                                    batch_size=max(ctx.batch_size, 256), amp_dtype=ctx.amp_dtype)
    method.train()
    start = time.perf_counter()
    if hook:
        method.on_epoch_start(sub_ctx)
    pre = (time.perf_counter() - start) * n / n_sub
    optimizer = build_optimizer(cfg.optimizer, method.parameter_groups(cfg.weight_decay), lr=cfg.lr,
                                momentum=cfg.momentum)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    state = StepState(epoch=0, step=0, steps_per_epoch=sub_ctx.steps_per_epoch, total_epochs=1, lr=cfg.lr * 1e-3,
                      weight_decay=cfg.weight_decay, teacher_momentum=0.996)
    order = epoch_order(method, sub_ctx, n_sub, cfg.seed) if hook else \
        np.arange(sub_ctx.steps_per_epoch * ctx.batch_size).reshape(-1, ctx.batch_size)
    times = []
    for i in range(PROBE_STEPS + 1):   # a fixed count: under DDP every rank's collectives pair up
        row = order[i % len(order)]
        start = time.perf_counter()
        index = torch.from_numpy(row if hook else idx[row])
        raw = {"images": torch.from_numpy(sub[row]).to(ctx.device), "index": index.to(ctx.device)}
        with torch.no_grad(), autocast(ctx.device, ctx.amp_dtype):
            collated = method.collate(raw, state)
        with autocast(ctx.device, ctx.amp_dtype):
            loss = method.training_step(collated, state).loss
        optimizer_step(method, optimizer, None, loss, state, clip_grad=clip_grad, params=params)
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times[1:]))
    m = min(n_sub, 256)
    start = time.perf_counter()
    embed_images(method.encoder(), sub, indices=np.arange(m), device=ctx.device, batch_size=max(ctx.batch_size, 256),
                 amp_dtype=ctx.amp_dtype)
    per_image = (time.perf_counter() - start) / m
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deepclust-probe-") as tmp:
        ckpt.save_checkpoint(Path(tmp), method=method, optimizer=optimizer, config=cfg.to_dict(), epoch=1, step=1,
                             rng=[ckpt.get_rng_states()], extra={})
    save = time.perf_counter() - start
    # on the safe side: a longer epoch can be planned later (up to MAX_STRETCH full passes), not fewer epochs
    post = POST_MARGIN * (per_image * _eval_images(cfg, n, labels is not None) + save + 0.01)
    return Estimate(step_s=step_s, pre_s=pre, post_s=post)


__all__ = ["Estimate", "probe"]
