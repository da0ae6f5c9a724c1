"""Head-only warm-up before step 0 of an ``--init`` run, for methods with a teacher head.

DINO, iBOT and DINOv2 start the teacher as a copy of the student, so with a pretrained
backbone and fresh heads the teacher's targets at step 0 are a random projection of good
features, and the first (lowered-lr) steps push the backbone towards them. The warm-up trains
only the fresh heads for ``init_head_warmup_steps`` steps on the frozen backbone, with the
method's own collate and loss:

* the student's heads (every trainable parameter outside ``method.backbone``) are trained by
  AdamW at the run's scaled learning rate (not lowered: they start from scratch) and weight decay;
* the teacher's heads follow by EMA with momentum 0.9 (the run's 0.996 would barely move them
  in a few dozen steps), the teacher temperature is the schedule's first value, and DINO's
  center moves as usual;
* at the end each teacher head is set to its warmed student head, as DINO starts with teacher =
  student; the student backbone, which never changed, still equals the teacher backbone.

The warm-up has its own optimiser and sample order (seeded by ``cfg.seed``), so the run's
optimiser starts fresh. Under DDP each process warms up on its own batches, then every
process takes rank 0's weights and buffers (a broadcast), so all start identical.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from deepclust.core.device import autocast
from deepclust.core.distributed import is_dist
from deepclust.core.ema import ema_update_
from deepclust.core.schedules import scaled_lr
from deepclust.methods.base import Method, StepState
from deepclust.methods.state import TrainContext
from deepclust.train.config import TrainConfig

log = logging.getLogger("deepclust.train")

WARMUP_TEACHER_MOMENTUM = 0.9


def head_pairs(method: Method) -> list[tuple[torch.nn.Module, torch.nn.Module]]:
    """The method's (teacher, student) EMA pairs other than the backbone's."""
    return [(t, s) for t, s in method.ema_pairs() if s is not method.backbone]


def _warmup_state(method: Method, cfg: TrainConfig, ctx: TrainContext, lr: float) -> StepState:
    teacher = method.teacher_schedule()
    temp = teacher.warmup_temp if teacher is not None else 0.04
    patch = teacher.patch_warmup_temp if teacher is not None and teacher.patch_warmup_temp is not None else temp
    return StepState(epoch=0, step=0, steps_per_epoch=ctx.steps_per_epoch, total_epochs=cfg.epochs, lr=lr,
                     weight_decay=cfg.weight_decay, teacher_momentum=WARMUP_TEACHER_MOMENTUM, teacher_temp=temp,
                     teacher_patch_temp=patch, freeze_last_layer=False)


def _batch(ctx: TrainContext, rng: np.random.Generator, size: int) -> dict[str, torch.Tensor]:
    n = len(ctx.images)
    idx = np.sort(rng.choice(n, size=size, replace=size > n))
    images = torch.from_numpy(np.ascontiguousarray(ctx.images[idx])).to(ctx.device)
    return {"images": images, "index": torch.from_numpy(idx.astype(np.int64)).to(ctx.device)}


def warm_up_heads(method: Method, cfg: TrainConfig, ctx: TrainContext) -> dict[str, Any] | None:
    """Run the warm-up (see the module docstring) when ``cfg.init`` is set, the method has a
    teacher head and ``init_head_warmup_steps > 0``; returns ``{"steps", "loss_first",
    "loss_last"}`` or None when nothing ran."""
    steps = int(cfg.init_head_warmup_steps or 0)
    pairs = head_pairs(method)
    if not cfg.init or steps <= 0 or not pairs:
        return None
    in_backbone = {id(p) for p in method.backbone.parameters()}
    heads = [p for p in method.parameters() if p.requires_grad and id(p) not in in_backbone]
    trunk = [p for p in method.backbone.parameters() if p.requires_grad]
    lr = scaled_lr(cfg.lr, cfg.batch_size * ctx.world_size)
    optimizer = torch.optim.AdamW(heads, lr=lr, weight_decay=cfg.weight_decay)
    state = _warmup_state(method, cfg, ctx, lr)
    rng = np.random.default_rng([cfg.seed, ctx.rank, 14])
    losses: list[float] = []
    for p in trunk:
        p.requires_grad_(False)
    method.train()
    try:
        for _ in range(steps):
            with torch.no_grad(), autocast(ctx.device, ctx.amp_dtype):
                batch = method.collate(_batch(ctx, rng, cfg.batch_size), state)
            with autocast(ctx.device, ctx.amp_dtype):
                loss = method.training_step(batch, state).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(heads, cfg.clip_grad)
            optimizer.step()
            for teacher, student in pairs:
                ema_update_(teacher, student, WARMUP_TEACHER_MOMENTUM)
            method.after_optimizer_step(state)
            losses.append(float(loss.detach().float()))
    finally:
        for p in trunk:
            p.requires_grad_(True)
    with torch.no_grad():
        for teacher, student in pairs:
            teacher.load_state_dict(student.state_dict())
        if is_dist():
            for tensor in method.state_dict().values():
                dist.broadcast(tensor, src=0)
    log.info("head warm-up on the frozen backbone: %d steps, loss %.4f -> %.4f", steps, losses[0], losses[-1])
    return {"steps": steps, "loss_first": losses[0], "loss_last": losses[-1]}


__all__ = ["WARMUP_TEACHER_MOMENTUM", "head_pairs", "warm_up_heads"]
