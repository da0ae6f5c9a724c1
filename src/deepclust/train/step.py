"""One optimisation step and the per-step schedule values, for the loop in `loop.py`.

* `Schedules`: every per-iteration value as an array over the run's global steps (lr,
  weight decay, teacher momentum, teacher [CLS] and patch temperatures) from `deepclust.core.schedules`,
  and `Schedules.state(epoch, step)` -> the `StepState` a method's `collate` and
  `training_step` receive.
* `StepModule`: routes ``forward`` to ``method.training_step`` (so DDP sees the whole step)
  and returns the weighted total of the step's named terms.
* `optimizer_step`: backward -> per-parameter gradient clipping (DINO's
  ``utils.clip_gradients``) -> cancel the last layer's gradients while frozen -> optimiser ->
  EMA pairs -> ``method.after_optimizer_step``. Clipping comes before the cancel, as in DINO,
  so the frozen layer never changes any other parameter's clip factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from deepclust.core.distributed import is_dist
from deepclust.core.ema import ema_update_
from deepclust.core.schedules import cosine_momentum_schedule, cosine_schedule, teacher_temp_schedule
from deepclust.errors import DeepclustError
from deepclust.methods.base import Method, StepOutput, StepState
from deepclust.train.optim import set_step_hyperparameters


class NonFiniteLossError(DeepclustError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class Schedules:
    """Per-step arrays (length: the run's total steps) and the freeze settings.

    Every epoch has ``steps_per_epoch`` steps, or ``epoch_steps[e]`` when a time budget sized
    them (`deepclust.train.budget`); `replan` stretches what is left of every schedule over
    new per-epoch step counts, so a re-sized run still ends at each schedule's end value."""

    lr: np.ndarray
    weight_decay: np.ndarray
    teacher_momentum: np.ndarray
    teacher_temp: np.ndarray
    steps_per_epoch: int
    epochs: int
    freeze_last_layer_epochs: int = 0
    freeze_last_layer_iters: int = 0
    teacher_patch_temp: np.ndarray | None = None   # iBOT's patch teacher; None: teacher_temp
    epoch_steps: list[int] | None = None            # per-epoch step counts (time budget); None: uniform
    temp_per_epoch: bool = True                     # teacher temperatures constant within an epoch (DINO)

    @classmethod
    def build(cls, method: Method, *, lr: float, min_lr: float, warmup_epochs: float, weight_decay: float,
              weight_decay_end: float, epochs: int, steps_per_epoch: int,
              epoch_steps: list[int] | None = None, warmup_scale: float = 1.0) -> Schedules:
        """`warmup_scale` (time budgets): the lr warm-up (capped at half the run) and the teacher
        temperature warm-up (capped at the run) are multiplied by it."""
        steps = [int(n) for n in epoch_steps] if epoch_steps is not None else [steps_per_epoch] * epochs
        total = sum(steps)
        bounds = np.concatenate([[0], np.cumsum(steps)]).astype(np.float64)

        def to_steps(n_epochs: float) -> int:  # a (fractional) number of epochs -> steps
            return int(round(float(np.interp(n_epochs, np.arange(len(bounds)), bounds))))

        lr_warmup = warmup_epochs if warmup_scale == 1.0 else min(warmup_epochs * warmup_scale, 0.5 * epochs)
        teacher = method.teacher_schedule()
        per_epoch = True
        if teacher is None:
            momentum, temp = np.ones(total), np.full(total, 0.04)
            patch_temp = temp
        else:
            momentum = cosine_momentum_schedule(teacher.momentum, teacher.momentum_end, total)
            warm = teacher.warmup_epochs if warmup_scale == 1.0 else min(teacher.warmup_epochs * warmup_scale, epochs)
            per_epoch = not teacher.per_iteration
            patch_warmup = teacher.warmup_temp if teacher.patch_warmup_temp is None else teacher.patch_warmup_temp
            temp = _teacher_temps(teacher.warmup_temp, teacher.temp, warm, steps, to_steps, per_epoch)
            patch_final = teacher.temp if teacher.patch_temp is None else teacher.patch_temp
            patch_temp = _teacher_temps(patch_warmup, patch_final, warm, steps, to_steps, per_epoch)
        return cls(lr=cosine_schedule(lr, min_lr, total, warmup_steps=to_steps(lr_warmup)),
                   weight_decay=cosine_schedule(weight_decay, weight_decay_end, total),
                   teacher_momentum=momentum, teacher_temp=temp, steps_per_epoch=steps_per_epoch,
                   epochs=epochs, freeze_last_layer_epochs=int(method.freeze_last_layer_epochs),
                   freeze_last_layer_iters=int(method.freeze_last_layer_iters), teacher_patch_temp=patch_temp,
                   epoch_steps=None if epoch_steps is None else steps, temp_per_epoch=per_epoch)

    def steps_in_epoch(self, epoch: int) -> int:
        if self.epoch_steps is None:
            return self.steps_per_epoch
        return self.epoch_steps[min(epoch, len(self.epoch_steps) - 1)]

    def replan(self, step: int, epoch_steps: list[int]) -> None:
        """From global `step` on, stretch the rest of every schedule over the new per-epoch step
        counts (same number of epochs): per-step values are resampled linearly between their
        value at `step` and their end value (`stretch_tail`); per-epoch teacher temperatures
        keep their value per epoch."""
        if len(epoch_steps) != self.epochs:
            raise ValueError(f"a re-plan keeps the number of epochs ({self.epochs}), got {len(epoch_steps)}")
        old = self.epoch_steps or [self.steps_per_epoch] * self.epochs
        total = int(sum(epoch_steps))
        self.lr = stretch_tail(self.lr, step, total)
        self.weight_decay = stretch_tail(self.weight_decay, step, total)
        self.teacher_momentum = stretch_tail(self.teacher_momentum, step, total)
        same = self.teacher_patch_temp is self.teacher_temp
        if self.temp_per_epoch:
            starts = np.minimum(np.concatenate([[0], np.cumsum(old)[:-1]]), len(self.teacher_temp) - 1)
            self.teacher_temp = np.repeat(self.teacher_temp[starts], epoch_steps)
            if self.teacher_patch_temp is not None and not same:
                self.teacher_patch_temp = np.repeat(self.teacher_patch_temp[starts], epoch_steps)
        else:
            self.teacher_temp = stretch_tail(self.teacher_temp, step, total)
            if self.teacher_patch_temp is not None and not same:
                self.teacher_patch_temp = stretch_tail(self.teacher_patch_temp, step, total)
        if same:
            self.teacher_patch_temp = self.teacher_temp
        self.epoch_steps = [int(n) for n in epoch_steps]

    def state(self, epoch: int, step: int) -> StepState:
        i = min(step, len(self.lr) - 1)
        patch_temp = self.teacher_temp if self.teacher_patch_temp is None else self.teacher_patch_temp
        return StepState(epoch=epoch, step=step, steps_per_epoch=self.steps_in_epoch(epoch), total_epochs=self.epochs,
                         lr=float(self.lr[i]), weight_decay=float(self.weight_decay[i]),
                         teacher_momentum=float(self.teacher_momentum[i]), teacher_temp=float(self.teacher_temp[i]),
                         teacher_patch_temp=float(patch_temp[i]),
                         freeze_last_layer=epoch < self.freeze_last_layer_epochs or step < self.freeze_last_layer_iters)


def _teacher_temps(warmup: float, final: float, warmup_epochs: float, steps: list[int], to_steps: Any,
                   per_epoch: bool) -> np.ndarray:
    """DINO's per-epoch teacher temperature repeated over each epoch's steps, or DINOv2's per
    iteration (`core.schedules.teacher_temp_schedule`)."""
    if per_epoch:
        return np.repeat(teacher_temp_schedule(warmup, final, warmup_epochs, len(steps), 1), steps)
    total = int(sum(steps))
    return teacher_temp_schedule(warmup, final, to_steps(warmup_epochs), total, 1, per_iteration=True)


def stretch_tail(values: np.ndarray, step: int, total: int) -> np.ndarray:
    """``values[:step]`` followed by ``values[step:]`` resampled (linear interpolation) to
    ``total - step`` points, its first and last values kept: the same curve, ending at the same
    end value, over a different number of remaining steps."""
    values = np.asarray(values, dtype=np.float64)
    step = min(max(0, int(step)), len(values))
    tail, n_new = values[step:], max(0, int(total) - step)
    if len(tail) == 0 or n_new == 0:
        return np.concatenate([values[:step], np.full(n_new, values[-1] if len(values) else 0.0)])
    x = np.linspace(0.0, len(tail) - 1.0, n_new) if n_new > 1 else np.array([len(tail) - 1.0])  # 1 left: the end
    return np.concatenate([values[:step], np.interp(x, np.arange(len(tail)), tail)])


class StepModule(nn.Module):
    """``forward(batch, state) -> (weighted total loss, StepOutput)`` of ``method.training_step``."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self, batch: dict[str, Any], state: StepState) -> tuple[torch.Tensor, StepOutput]:
        out = self.method.training_step(batch, state)
        if not isinstance(out, StepOutput):
            raise DeepclustError(f"{type(self.method).__name__}.training_step must return a StepOutput, "
                                 f"got {type(out).__name__}")
        return out.loss, out


@torch.no_grad()
def clip_gradients_(params: list[torch.Tensor], clip: float) -> None:
    """DINO's ``utils.clip_gradients``: for each parameter with a gradient,
    ``coef = clip / (||grad|| + 1e-6)``; the gradient is scaled by ``coef`` when ``coef < 1``.
    All norms and scalings in one batched call each (torch's ``_foreach`` kernels, as
    ``torch.nn.utils.clip_grad_norm_`` uses), not two small ops per parameter."""
    grads = [p.grad.detach() for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([n.float() for n in torch._foreach_norm(grads, 2)])
    coefs = torch.clamp(clip / (norms + 1e-6), max=1.0)
    torch._foreach_mul_(grads, list(coefs.unbind()))


def check_finite(loss: torch.Tensor, state: StepState) -> None:
    """Every process stops together when any process' loss is not finite."""
    finite = torch.isfinite(loss.detach()).float()
    if is_dist():
        dist.all_reduce(finite, op=dist.ReduceOp.MIN)
    if finite.item() < 1:
        raise NonFiniteLossError(
            f"the loss became {loss.item()} at epoch {state.epoch + 1}, step {state.step}: training diverged. "
            f"The last good checkpoint (end of epoch {state.epoch}) is kept. Lower the learning rate "
            "(--lr), add gradient clipping (--set clip_grad=3.0), or turn AMP off (--set amp=off).")


def optimizer_step(method: Method, optimizer: torch.optim.Optimizer, scaler: Any, loss: torch.Tensor,
                   state: StepState, *, clip_grad: float, params: list[torch.Tensor]) -> None:
    """Backward, clip, cancel the frozen last layer, step, EMA (see module doc)."""
    set_step_hyperparameters(optimizer, state.lr, state.weight_decay)
    optimizer.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler and clip_grad > 0:
        scaler.unscale_(optimizer)
    if clip_grad > 0:
        clip_gradients_(params, clip_grad)
    if state.freeze_last_layer:  # DINO/SwAV: the last layer stays fixed at first
        for p in method.last_layer_parameters():
            p.grad = None
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    for teacher, student in method.ema_pairs():
        ema_update_(teacher, student, state.teacher_momentum)
    method.after_optimizer_step(state)


def forget_optimizer_state(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """Drop the optimiser state (momentum, Adam moments, step count) of re-initialised
    parameters, as a freshly built optimiser for them would have none."""
    for p in params:
        optimizer.state.pop(p, None)


__all__ = ["NonFiniteLossError", "Schedules", "StepModule", "check_finite", "clip_gradients_",
           "forget_optimizer_state", "optimizer_step", "stretch_tail"]
