"""The one training loop every method uses.

    train(cfg, store, out_dir) -> out_dir

The loop owns: seeding, the epoch's sample order and batching, optimiser and per-step
cosine lr / weight-decay schedules (linear warm-up), AMP, gradient clipping, freezing the
last layer for the first epochs, the method's hooks, progress bar and log.csv, the
collapse watch and online k-NN, checkpoints every epoch (exact resume), and DDP.

Exact resume: a checkpoint is written after every completed epoch with all RNG states;
the sample order of epoch e is a pure function of (seed, e), and schedules are indexed by
the global step. Resuming therefore replays the next epoch exactly as an uninterrupted run
would. An interrupt (Ctrl-C, SIGTERM) mid-epoch leaves the last complete checkpoint in
place; `--resume` restarts the interrupted epoch from its beginning.

DDP: the method is wrapped in DistributedDataParallel through a tiny module whose
forward is `method.training_step`, so every parameter that needs a gradient is
synchronised; parameters without gradients (EMA teachers) are not. Buffers are synced
from rank 0 once at start but not at every forward: queues are per-process on purpose and
methods synchronise shared statistics (DINO's center) themselves. Checkpoints hold rank 0's
buffers, so after a DDP resume every rank starts from rank 0's copy of per-process buffers
(e.g. SwAV's queue); weights, optimiser state and each rank's RNG state resume exactly. A method with parameters that
some steps do not use sets `ddp_find_unused_parameters = True`.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from deepclust.errors import CollapseError, DataError, DeepclustError
from deepclust.train import checkpoint as ckpt
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.context import TrainContext
from deepclust.core.distributed import barrier, get_rank, get_world_size, init_from_env, is_dist
from deepclust.core.device import amp_dtype as amp_dtype_for
from deepclust.core.device import autocast
from deepclust.train.embedding import embed_all_sharded
from deepclust.train.feed import BatchFeeder
from deepclust.train.interrupts import InterruptGuard
from deepclust.train.logging import RunLogger
from deepclust.train.monitor import check_collapse
from deepclust.train.online_eval import OnlineEvaluator
from deepclust.train.optim import build_optimizer, set_step_hyperparameters
from deepclust.core.schedules import cosine_schedule, scaled_lr

log = logging.getLogger("deepclust.train")


class NonFiniteLossError(DeepclustError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class _StepModule(nn.Module):
    """Routes forward() to method.training_step so DDP sees the whole step."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method
        self.step_ctx: TrainContext | None = None

    def forward(self, images: torch.Tensor, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.method.training_step(images, indices, self.step_ctx)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(method: nn.Module, ctx: TrainContext, n_images: int, seed: int) -> np.ndarray:
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


def _gather_rng() -> list[Any]:
    mine = ckpt.get_rng_states()
    if not is_dist():
        return [mine]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, mine)
    return out


def _check_store(store: Any) -> tuple[np.ndarray, np.ndarray | None]:
    images = getattr(store, "images", None)
    if images is None or images.ndim != 4 or images.shape[3] != 3 or images.dtype != np.uint8:
        raise DataError("train() needs an ImageStore whose images are uint8 (N, S, S, 3); "
                        "load it with deepclust.data.store.load_images")
    labels = getattr(store, "labels", None)
    return images, (None if labels is None else np.asarray(labels))


def train(
    cfg: TrainConfig,
    store: Any,
    out_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    eval_store: Any | None = None,
    method: nn.Module | None = None,
) -> Path:
    """Train `cfg.method` on `store` (an ImageStore); checkpoints and logs go to `out_dir`.

    `method` may be passed ready-built (library use, tests); otherwise it is built from cfg.
    Raises CollapseError / NonFiniteLossError after saving the last good checkpoint.
    Runs with `cfg.torch_threads` CPU threads when set, and restores the caller's count.
    """
    previous_threads = torch.get_num_threads()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    try:
        return _train(cfg, store, out_dir, resume=resume, progress=progress,
                      eval_store=eval_store, method=method)
    finally:
        torch.set_num_threads(previous_threads)


def _train(cfg: TrainConfig, store: Any, out_dir: str | Path, *, resume: bool, progress: bool,
           eval_store: Any | None, method: nn.Module | None) -> Path:
    out_dir = Path(out_dir)
    device = init_from_env(cfg.device)
    rank, world = get_rank(), get_world_size()
    images, labels = _check_store(store)
    cfg = dataclasses.replace(cfg, image_size=int(images.shape[1]))
    global_batch = cfg.batch_size * world
    if len(images) < global_batch:
        raise DataError(f"only {len(images)} images but one batch needs {global_batch}: lower --batch-size")
    steps_per_epoch = len(images) // global_batch

    state = ckpt.read_state(out_dir) if resume else None
    if resume and state is None:
        log.warning("nothing to resume in %s (no complete checkpoint): starting a new run", out_dir)
    if not resume and (out_dir / ckpt.STATE_FILE).exists():
        raise DeepclustError(f"{out_dir} already holds a training run: pass --resume to continue it or choose another --out")
    start_epoch, start_step = (state["epoch"], state["step"]) if state else (0, 0)
    if state:
        _warn_changed_settings(out_dir, cfg, world, state)

    seed_everything(cfg.seed + rank)
    method = method if method is not None else build_method_from_config(cfg)
    if cfg.freeze_last_layer_epochs is not None:
        method.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    method.to(device)
    amp_dtype = amp_dtype_for(cfg.amp, device)
    ctx = TrainContext(epoch=start_epoch, step=start_step, steps_per_epoch=steps_per_epoch,
                       total_epochs=cfg.epochs, device=device, images=images, labels=labels,
                       batch_size=cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world, amp_dtype=amp_dtype)
    embed_bs = max(cfg.batch_size, 256)
    ctx.embed_all = lambda: embed_all_sharded(method, images, device=device, batch_size=embed_bs,
                                              amp_dtype=amp_dtype, progress=progress and rank == 0)
    method.on_train_start(ctx)
    optimizer = build_optimizer(cfg.optimizer, method.parameter_groups(cfg.weight_decay),
                                lr=scaled_lr(cfg.lr, global_batch), momentum=cfg.momentum)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    if state:
        ckpt.load_checkpoint(out_dir, method, optimizer)
        if scaler is not None and "grad_scaler" in state["extra"]:
            scaler.load_state_dict(state["extra"]["grad_scaler"])
        log.info("resuming %s after epoch %d (step %d)", out_dir, start_epoch, start_step)

    model: nn.Module = _StepModule(method)
    if is_dist():
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=getattr(method, "ddp_find_unused_parameters", False), **_no_buffer_sync())
    step_module = model.module if is_dist() else model
    step_module.step_ctx = ctx

    total_steps = steps_per_epoch * cfg.epochs
    lr_schedule = cosine_schedule(scaled_lr(cfg.lr, global_batch), cfg.min_lr, total_steps,
                                  warmup_steps=int(round(cfg.warmup_epochs * steps_per_epoch)))
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    wd_schedule = cosine_schedule(cfg.weight_decay, wd_end, total_steps)
    evaluator = None
    logger = None
    if rank == 0:
        eval_images, eval_labels = _check_store(eval_store) if eval_store is not None else (None, None)
        evaluator = OnlineEvaluator(images, labels, k=cfg.k, seed=cfg.seed, monitor_samples=cfg.monitor_samples,
                                    eval_samples=cfg.eval_samples, knn_every=cfg.knn_every, knn_k=cfg.knn_k,
                                    device=device, batch_size=embed_bs, amp_dtype=amp_dtype,
                                    eval_images=eval_images, eval_labels=eval_labels)
        out_dir.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(out_dir, tensorboard=cfg.tensorboard, resume_epoch=start_epoch if state else None)
    if state:  # last, so nothing between here and the first step draws random numbers
        rngs = state["rng"]
        ckpt.set_rng_states(rngs[rank % len(rngs)])

    guard = InterruptGuard().install()
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            ctx.epoch = epoch
            row = _train_epoch(model, method, optimizer, scaler, ctx, cfg, images, lr_schedule, wd_schedule, progress)
            stats = None
            if rank == 0:
                stats, eval_row = evaluator(method, epoch)
                row.update(eval_row)
                with guard.deferred():
                    logger.log_epoch(row)
                    ckpt.save_checkpoint(out_dir, method=method, optimizer=optimizer, config=cfg.to_dict(),
                                         epoch=epoch + 1, step=ctx.step, rng=_gather_rng(),
                                         extra={"world_size": world, **({"grad_scaler": scaler.state_dict()} if scaler else {})})
            elif is_dist():
                _gather_rng()  # the collective pairs with rank 0's call
            barrier()
            _raise_if_collapsed(stats, epoch, cfg, device)
    except KeyboardInterrupt:
        done = ckpt.read_state(out_dir) if rank == 0 else None
        log.warning("interrupted during epoch %d; %s", epoch + 1,
                    f"the checkpoint after epoch {done['epoch']} is kept: continue with --resume" if done
                    else "no epoch was completed, so there is no checkpoint")
        raise
    finally:
        guard.restore()
        if logger is not None:
            logger.close()
    return out_dir


def _no_buffer_sync() -> dict[str, bool]:
    """DDP keyword that stops buffers being broadcast from rank 0 at every forward
    (`forward_sync_buffers` in newer torch, `broadcast_buffers` before)."""
    import inspect

    params = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def _warn_changed_settings(out_dir: Path, cfg: TrainConfig, world: int, state: dict[str, Any]) -> None:
    """Resuming is exact only with the settings of the run (more epochs excepted)."""
    import json

    saved = json.loads((out_dir / ckpt.CONFIG_FILE).read_text())
    now = cfg.to_dict()
    changed = sorted(k for k in now if k not in ("epochs", "device", "num_workers", "log_every", "tensorboard")
                     and saved.get(k) != now[k])
    if state["extra"].get("world_size", world) != world:
        changed.append("world_size")
        saved["world_size"], now["world_size"] = state["extra"]["world_size"], world
    if changed:
        log.warning("resuming %s with changed settings %s: the run is no longer an exact continuation",
                    out_dir, ", ".join(f"{k}: {saved.get(k)!r} -> {now[k]!r}" for k in changed))


def _raise_if_collapsed(stats, epoch: int, cfg: TrainConfig, device: torch.device) -> None:
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


def train_step(model: nn.Module, method: nn.Module, optimizer: torch.optim.Optimizer, scaler, ctx: TrainContext,
               batch: torch.Tensor, index: torch.Tensor, *, lr: float, wd: float, clip_grad: float = 0.0,
               frozen_last: bool = False, trainable: list[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """One optimisation step: schedules -> forward (autocast) -> finite check -> backward ->
    last-layer freeze -> clipping -> optimiser -> method.after_optimizer_step. Does not advance ctx.step."""
    set_step_hyperparameters(optimizer, lr, wd)
    with autocast(ctx.device, ctx.amp_dtype):
        out = model(batch, index)
    loss = out["loss"]
    finite = torch.isfinite(loss.detach()).float()
    if is_dist():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at epoch {ctx.epoch + 1}, step {ctx.step}: training diverged. "
            f"The last good checkpoint (end of epoch {ctx.epoch}) is kept. Lower the learning rate "
            "(--lr), add gradient clipping (--set clip_grad=3.0), or turn AMP off (--set amp=off).")
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if frozen_last:  # DINO/SwAV: the prototypes stay fixed for the first epochs
        for p in method.last_layer_parameters():
            p.grad = None
    if clip_grad > 0:
        if scaler:
            scaler.unscale_(optimizer)
        params = trainable if trainable is not None else [p for g in optimizer.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    method.after_optimizer_step(ctx)
    return out


def _train_epoch(model, method, optimizer, scaler, ctx: TrainContext, cfg: TrainConfig, images: np.ndarray,
                 lr_schedule: np.ndarray, wd_schedule: np.ndarray, progress: bool) -> dict[str, Any]:
    epoch_start = time.perf_counter()
    method.train()
    ctx.logs = {}
    method.on_epoch_start(ctx)  # e.g. DeepCluster's k-means: in "seconds", not in "images_per_s"
    order = epoch_order(method, ctx, len(images), cfg.seed)
    feeder = BatchFeeder(images, order, ctx.device, prefetch=cfg.num_workers * 2)
    trainable = [p for g in optimizer.param_groups for p in g["params"]]
    frozen_last = ctx.epoch < getattr(method, "freeze_last_layer_epochs", 0)
    sums: dict[str, float] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(order), desc=f"epoch {ctx.epoch + 1}/{cfg.epochs}",
               disable=not (progress and ctx.rank == 0), leave=False)
    lr = wd = 0.0
    for i, (batch, index) in enumerate(feeder):
        lr, wd = float(lr_schedule[ctx.step]), float(wd_schedule[ctx.step])
        out = train_step(model, method, optimizer, scaler, ctx, batch, index, lr=lr, wd=wd,
                         clip_grad=cfg.clip_grad, frozen_last=frozen_last, trainable=trainable)
        ctx.step += 1
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach().float().mean())
        bar.update(1)
        if (i + 1) % cfg.log_every == 0 or i + 1 == len(order):
            rate = (i + 1) * cfg.batch_size * ctx.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{sums['loss'] / (i + 1):.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.0f}")
    bar.close()
    seconds = time.perf_counter() - start
    steps = max(1, len(order))
    epoch_seconds = time.perf_counter() - epoch_start
    row: dict[str, Any] = {"epoch": ctx.epoch + 1, "step": ctx.step, "loss": sums.get("loss", float("nan")) / steps,
                           "lr": lr, "wd": wd, "images_per_s": steps * cfg.batch_size * ctx.world_size / seconds,
                           "seconds": epoch_seconds}
    row.update({k: v / steps for k, v in sums.items() if k != "loss"})
    row.update(ctx.logs)
    return row
