"""The one training loop every method uses.

    train(cfg, store, out_dir) -> out_dir

The loop owns: seeding, the epoch's sample order and batching, the optimiser and every
per-step schedule (lr, weight decay, teacher momentum and temperature, last-layer freeze;
`step.Schedules`), AMP, per-parameter gradient clipping, EMA updates of the method's
teacher pairs, progress bar and log.csv (every loss term and the total), the collapse
watch and online k-NN, checkpoints every epoch (exact resume), and DDP. A method supplies
`collate` and `training_step` (see `deepclust.methods.base`). `train()` trains and
checkpoints only; clustering a run is the pipeline's job (`deepclust cluster --model RUN`).

Exact resume: a checkpoint is written after every completed epoch with all RNG states;
the sample order of epoch e is a pure function of (seed, e), and schedules are indexed by
the global step. Resuming therefore replays the next epoch exactly as an uninterrupted run
would. An interrupt (Ctrl-C, SIGTERM) mid-epoch leaves the last complete checkpoint in
place; `--resume` restarts the interrupted epoch from its beginning.

DDP: the method is wrapped in DistributedDataParallel through `step.StepModule`, whose
forward is `method.training_step`, so every parameter that needs a gradient is
synchronised; parameters without gradients (EMA teachers) are not. Buffers are synced
from rank 0 once at start but not at every forward: queues are per-process on purpose and
methods synchronise shared statistics (DINO's center) themselves. Checkpoints hold rank 0's
buffers, so after a DDP resume every rank starts from rank 0's copy of per-process buffers
(e.g. SwAV's queue); weights, optimiser state and each rank's RNG state resume exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deepclust.core.device import amp_dtype as amp_dtype_for
from deepclust.core.device import autocast, use_channels_last
from deepclust.core.distributed import barrier, get_rank, get_world_size, init_from_env, is_dist
from deepclust.core.outdir import output_lock
from deepclust.core.schedules import scaled_lr
from deepclust.errors import DataError, DeepclustError
from deepclust.methods.base import Method
from deepclust.methods.state import TrainContext
from deepclust.train import budget as budget_mod
from deepclust.train import checkpoint as ckpt
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.feed import BatchFeeder
from deepclust.train.init_from import INIT_GIVEN, resolve_init
from deepclust.train.init_warmup import warm_up_heads
from deepclust.train.interrupts import InterruptGuard
from deepclust.train.logging import RunLogger
from deepclust.train.online_eval import OnlineEvaluator
from deepclust.train.optim import adaptation_parameter_groups, build_optimizer
from deepclust.train.setup import (
    check_store,
    embed_store_sharded,
    epoch_order,
    gather_rng,
    raise_if_collapsed,
    seed_everything,
    warn_changed_settings,
    wrap_ddp,
)
from deepclust.train.step import (
    NonFiniteLossError,
    Schedules,
    StepModule,
    check_finite,
    forget_optimizer_state,
    optimizer_step,
)

log = logging.getLogger("deepclust.train")

__all__ = ["NonFiniteLossError", "train"]


@dataclasses.dataclass
class _Run:
    """Everything an epoch needs, built once by `_setup`."""

    cfg: TrainConfig
    method: Method
    model: nn.Module                 # StepModule, DDP-wrapped under torchrun
    optimizer: torch.optim.Optimizer
    scaler: Any
    schedules: Schedules
    ctx: TrainContext
    images: np.ndarray
    progress: bool
    budget: budget_mod.BudgetController | None = None   # --time: sizes and re-plans the epochs


def train(cfg: TrainConfig, store: Any, out_dir: str | Path, *, resume: bool = False, progress: bool = True,
          eval_store: Any | None = None, method: nn.Module | None = None,
          trust_custom_code: bool = False) -> Path:
    """Train `cfg.method` on `store` (an ImageStore); checkpoints and logs go to `out_dir`.

    `method` may be passed ready-built (library use, tests); otherwise it is built from cfg.
    Raises CollapseError / NonFiniteLossError after saving the last good checkpoint.
    Runs with `cfg.torch_threads` CPU threads when set, and restores the caller's count.
    `trust_custom_code`: allow a ``module:factory`` cfg.method to be imported (see builder).
    """
    started = time.perf_counter()   # a time budget counts from here
    previous_threads = torch.get_num_threads()
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    # rank 0 owns the run folder (under torchrun RANK is set before any process group exists)
    first = (get_rank() if is_dist() else int(os.environ.get("RANK", "0"))) == 0
    lock = output_lock(out_dir) if first else contextlib.nullcontext()
    try:
        with lock:
            return _train(cfg, store, Path(out_dir), resume=resume, progress=progress, eval_store=eval_store,
                          method=method, trust_custom_code=trust_custom_code, started=started)
    finally:
        torch.set_num_threads(previous_threads)


def _train(cfg: TrainConfig, store: Any, out_dir: Path, *, resume: bool, progress: bool,
           eval_store: Any | None, method: nn.Module | None, trust_custom_code: bool, started: float) -> Path:
    run, state = _setup(cfg, store, out_dir, resume=resume, progress=progress, method=method,
                        trust_custom_code=trust_custom_code, started=started)
    cfg, ctx, rank = run.cfg, run.ctx, run.ctx.rank
    evaluator = logger = None
    if rank == 0:
        eval_images, eval_labels = check_store(eval_store) if eval_store is not None else (None, None)
        evaluator = OnlineEvaluator(run.images, ctx.labels, k=cfg.k, seed=cfg.seed, monitor_samples=cfg.monitor_samples,
                                    eval_samples=cfg.eval_samples, knn_every=cfg.knn_every, knn_k=cfg.knn_k,
                                    device=ctx.device, batch_size=max(cfg.batch_size, 256), amp_dtype=ctx.amp_dtype,
                                    eval_images=eval_images, eval_labels=eval_labels)
        out_dir.mkdir(parents=True, exist_ok=True)
        logger = RunLogger(out_dir, tensorboard=cfg.tensorboard, resume_epoch=ctx.epoch if state else None)
    if state:  # last, so nothing between here and the first step draws random numbers
        ckpt.set_rng_states(state["rng"][rank % len(state["rng"])])

    guard = InterruptGuard().install()
    epoch = ctx.epoch
    try:
        for epoch in range(ctx.epoch, cfg.epochs):
            ctx.epoch = epoch
            row = _train_epoch(run)
            stats = None
            if evaluator is not None and logger is not None:
                stats, eval_row = evaluator(run.method, epoch)
                row.update(eval_row)
                with guard.deferred():
                    logger.log_epoch(row)
                    _save(run, out_dir)
            elif is_dist():
                gather_rng()  # the collective pairs with rank 0's call in _save
            barrier()
            if run.budget is not None:
                run.budget.end_epoch(epoch, ctx.step)
            raise_if_collapsed(stats, epoch, cfg, ctx.device)
    except NonFiniteLossError as exc:
        if rank == 0 and ckpt.read_state(out_dir) is None:  # the step's message speaks of a kept checkpoint
            raise NonFiniteLossError(f"the loss became NaN or infinite at step {ctx.step + 1}, in epoch {epoch + 1}, "
                                     "before any epoch was completed, so there is no checkpoint. Lower the "
                                     "learning rate (--lr), add gradient clipping (--set clip_grad=3.0), or "
                                     "turn AMP off (--set amp=off)") from exc
        raise
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


def _train_epoch(run: _Run) -> dict[str, Any]:
    """One epoch: the method's epoch hook, then collate -> step -> optimise for every batch."""
    cfg, ctx, method = run.cfg, run.ctx, run.method
    epoch_start = time.perf_counter()
    if run.budget is not None:
        run.budget.begin_epoch()
        ctx.steps_per_epoch = run.budget.rows(ctx.epoch)   # the order has room for a longer re-plan
    method.train()
    ctx.logs, ctx.reinitialized = {}, []
    method.on_epoch_start(ctx)  # e.g. DeepCluster's k-means: in "seconds", not in "images_per_s"
    forget_optimizer_state(run.optimizer, ctx.reinitialized)
    feeder = BatchFeeder(run.images, epoch_order(method, ctx, len(run.images), cfg.seed), ctx.device,
                         prefetch=cfg.num_workers * 2)
    params = [p for g in run.optimizer.param_groups for p in g["params"]]
    sums: dict[str, float] = {}
    state = run.schedules.state(ctx.epoch, ctx.step)
    start = time.perf_counter()
    if run.budget is not None:
        run.budget.begin_steps(ctx.epoch)
    planned = run.schedules.steps_in_epoch(ctx.epoch) if run.budget is not None else len(feeder)
    bar = tqdm(total=planned, desc=f"epoch {ctx.epoch + 1}/{cfg.epochs}",
               disable=not (run.progress and ctx.rank == 0), leave=False)
    done = 0
    for i, raw in enumerate(feeder):
        state = run.schedules.state(ctx.epoch, ctx.step)
        with torch.no_grad(), autocast(ctx.device, ctx.amp_dtype):
            batch = method.collate(raw, state)
        with autocast(ctx.device, ctx.amp_dtype):
            loss, out = run.model(batch, state)
        check_finite(loss, state)
        optimizer_step(method, run.optimizer, run.scaler, loss, state, clip_grad=cfg.clip_grad, params=params)
        ctx.step += 1
        done = i + 1
        for key, value in _step_logs(loss, out).items():
            sums[key] = sums.get(key, 0.0) + value
        bar.update(1)
        if done % cfg.log_every == 0 or done == planned:
            rate = done * cfg.batch_size * ctx.world_size / (time.perf_counter() - start)
            bar.set_postfix(loss=f"{sums['loss'] / done:.4f}", lr=f"{state.lr:.2e}", img_s=f"{rate:.0f}")
        if run.budget is not None and run.budget.after_step(ctx.epoch, done, ctx.step):
            break
    feeder.close()
    bar.close()
    steps, seconds = max(1, done), time.perf_counter() - start
    row: dict[str, Any] = {"epoch": ctx.epoch + 1, "step": ctx.step, "loss": sums.pop("loss", float("nan")) / steps,
                           "lr": state.lr, "wd": state.weight_decay,
                           "images_per_s": steps * cfg.batch_size * ctx.world_size / seconds,
                           "seconds": time.perf_counter() - epoch_start}
    row.update({k: v / steps for k, v in sums.items()})
    row.update(ctx.logs)
    return row


def _step_logs(loss: torch.Tensor, out: Any) -> dict[str, float]:
    """``loss`` (the weighted total), ``loss_<term>`` for each named term, and the step's logs."""
    logs = {"loss": float(loss.detach().float())}
    logs.update({f"loss_{name}": float(t.detach().float()) for name, t in out.terms.items()})
    logs.update({k: float(v.detach().float().mean()) if isinstance(v, torch.Tensor) else float(v)
                 for k, v in out.logs.items()})
    return logs


def _setup(cfg: TrainConfig, store: Any, out_dir: Path, *, resume: bool, progress: bool, method: nn.Module | None,
           trust_custom_code: bool = False, started: float = 0.0) -> tuple[_Run, dict[str, Any] | None]:
    """Device, data checks, checkpoint to resume, method, optimiser, schedules, DDP."""
    device = init_from_env(cfg.device)
    rank, world = get_rank(), get_world_size()
    images, labels = check_store(store)
    cfg = dataclasses.replace(cfg, image_size=int(images.shape[1]))
    cfg = resolve_init(cfg, given=INIT_GIVEN)  # --init: SPEC's architecture and adaptation defaults (idempotent)
    global_batch = cfg.batch_size * world
    if len(images) < global_batch:
        raise DataError(f"only {len(images)} images but one batch needs {global_batch}: lower --batch-size")
    steps_per_epoch = len(images) // global_batch
    state = ckpt.read_state(out_dir) if resume else None
    if resume and state is None:
        log.warning("nothing to resume in %s (no checkpoint: no epoch was completed there): starting a new run",
                    out_dir)
    if not resume and ckpt.has_checkpoint_files(out_dir):
        raise DeepclustError(f"{out_dir} already holds a training run: pass --resume to continue it "
                             "or choose another --out")
    if state:
        cfg = budget_mod.resumed_epochs(cfg, state)  # a budget run keeps its sized epochs
        warn_changed_settings(out_dir, cfg, world, state)
        if rank == 0:
            ckpt.prune_stale(out_dir)

    seed_everything(cfg.seed + rank)
    built = method if method is not None else build_method_from_config(cfg, trust_custom_code=trust_custom_code,
                                                                             init_weights=not state)
    if not isinstance(built, Method):
        raise DeepclustError(f"train() needs a deepclust Method, got {type(built).__name__}")
    if cfg.freeze_last_layer_epochs is not None:
        built.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    built.to(device)
    if cfg.backbone_kwargs.get("channels_last") is None:   # conv nets: channels_last unless told otherwise
        use_channels_last(built)
    amp_dtype = amp_dtype_for(cfg.amp, device, cfg.backbone, cfg.image_size)
    if rank == 0:
        log.info("precision: %s (amp: %s)", "float32" if amp_dtype is None else str(amp_dtype).split(".")[-1], cfg.amp)
    ctx = TrainContext(epoch=state["epoch"] if state else 0, step=state["step"] if state else 0,
                       steps_per_epoch=steps_per_epoch, total_epochs=cfg.epochs, device=device, images=images,
                       labels=labels, batch_size=cfg.batch_size, seed=cfg.seed, rank=rank, world_size=world,
                       amp_dtype=amp_dtype, store=store)
    ctx.embed_all = lambda: embed_store_sharded(built.encoder(), images, device=device,
                                                batch_size=max(cfg.batch_size, 256), amp_dtype=amp_dtype,
                                                progress=progress and rank == 0)
    built.on_train_start(ctx)
    if not state:
        warm_up_heads(built, cfg, ctx)  # --init: fresh heads trained on the frozen backbone first
    cfg, plan = budget_mod.plan_budget(built, cfg, ctx, state=state, started=started)  # --time: size the run
    lr = scaled_lr(cfg.lr, global_batch, rule=cfg.lr_scaling)
    groups = adaptation_parameter_groups(built, cfg.weight_decay, lr_scale=cfg.init_lr_scale,
                                         layer_decay=cfg.layer_decay)  # --init's lower lr, layer decay
    optimizer = build_optimizer(cfg.optimizer, groups, lr=lr, momentum=cfg.momentum)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    if state:
        ckpt.load_checkpoint(out_dir, built, optimizer)
        if scaler is not None and "grad_scaler" in state["extra"]:
            scaler.load_state_dict(state["extra"]["grad_scaler"])
        log.info("resuming %s after epoch %d (step %d)", out_dir, ctx.epoch, ctx.step)
    model: nn.Module = StepModule(built)
    if is_dist():
        model = wrap_ddp(model, built, device)
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    if plan is not None:
        schedules = budget_mod.build_schedules(built, cfg, plan, lr=lr, steps_per_epoch=steps_per_epoch)
    else:
        schedules = Schedules.build(built, lr=lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
                                    weight_decay=cfg.weight_decay, weight_decay_end=wd_end, epochs=cfg.epochs,
                                    steps_per_epoch=steps_per_epoch)
    controller = None if plan is None else budget_mod.BudgetController(plan, schedules, started=started)
    return _Run(cfg, built, model, optimizer, scaler, schedules, ctx, images, progress, controller), state


def _save(run: _Run, out_dir: Path) -> None:
    extra: dict[str, Any] = {"world_size": run.ctx.world_size}
    if run.scaler is not None:
        extra["grad_scaler"] = run.scaler.state_dict()
    if run.budget is not None:
        extra["budget"] = run.budget.state()
    ckpt.save_checkpoint(out_dir, method=run.method, optimizer=run.optimizer, config=run.cfg.to_dict(),
                         epoch=run.ctx.epoch + 1, step=run.ctx.step, rng=gather_rng(), extra=extra)
