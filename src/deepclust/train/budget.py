"""Time budgets: ``deepclust train ... --time 60m`` sizes the run to the budget.

    parse_duration("90s" | "60m" | "2h" | "1h30m") -> seconds
    probe(...) -> Estimate            # measured: step time, per-epoch overheads (budget_probe)
    size_plan(budget_s, estimate, ...) -> BudgetPlan
    BudgetController                  # the loop's side: re-plans as the measured rate drifts

How a budgeted run is sized (the clock starts when `train()` is called):

1. **Probe.** A copy of the freshly built method runs its epoch hook on a subset of the store
   and a few optimisation steps (1 untimed, then timed) with its own optimiser; every RNG is
   restored afterwards, so the run itself is unaffected. This gives the step time ``t``, the
   per-epoch work before the steps ``pre`` (DeepCluster's embedding + k-means, scaled from
   the subset to the store) and after them ``post`` (collapse watch and k-NN embedding at the
   measured embedding rate, a checkpoint from the parameter bytes).
2. **Size.** With ``B`` seconds left and ``F`` steps in a full epoch: ``E = ceil(B / (F t +
   pre + post))`` epochs of ``floor((B / E - pre - post) / t) <= F`` steps each. The plan
   (epochs, per-epoch steps, estimates, why) is logged and kept in every checkpoint's
   state.json; config.json records ``epochs: E`` and ``time_budget``.
3. **Stretch.** Settings counted in epochs are read as fractions of the recipe's run
   (``cfg.epochs``, the reference): scaled by ``E / cfg.epochs`` -- the lr warm-up (capped at
   half the run), the teacher temperature warm-up (capped at the run), the last-layer freeze
   (epochs; iterations by the step ratio), DAC's threshold schedule (``threshold_epochs``,
   its natural speed when unset, capped so that the thresholds meet in the last epoch) and
   SwAV's queue start. Every per-step schedule (lr, wd, teacher momentum, temperatures) spans
   exactly the planned steps, so it ends at its end value.
4. **Control.** At each quarter of every epoch (every step of the last) and after it, the
   remaining step counts are recomputed from the measured rate and overheads (a busy machine,
   a first epoch slower than the probe); `Schedules.replan` stretches the rest of every schedule over them, so the run
   still ends at each schedule's end value, within a few per cent of the budget. The number
   of epochs never changes (per-epoch work and epoch-indexed settings stay as planned).

Resuming keeps the plan: the schedules are rebuilt from the stored plan and its re-plans, and
the budget left is the budget minus the training time already spent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from deepclust.methods.base import Method
from deepclust.methods.state import TrainContext
from deepclust.train.budget_probe import Estimate, probe
from deepclust.train.config import MAX_BUDGET_S, MAX_EPOCHS, TrainConfig, parse_duration
from deepclust.train.step import Schedules

log = logging.getLogger("deepclust.train")

#: Method settings counted in epochs / in iterations that a budget scales (when the method has them).
EPOCH_KWARGS = ("epoch_queue_starts", "threshold_epochs")
MAX_STRETCH = 8        # a re-plan may lengthen an epoch up to this many full passes

__all__ = ["MAX_BUDGET_S", "BudgetController", "BudgetPlan", "Estimate", "parse_duration", "probe", "size_plan"]


@dataclass
class BudgetPlan:
    """The sized run: what the loop and a resumed run need (kept in state.json)."""

    budget_s: float
    epochs: int                          # E: the run's number of epochs
    reference_epochs: int                # the recipe's epochs (what epoch-counted settings refer to)
    full_steps: int                      # steps of a full pass over the store
    epoch_steps: list[int]               # the initial per-epoch step counts
    estimate: dict[str, float]           # the probe's Estimate
    # [step, first changed epoch, its counts on, run-length encoded as [[count, n_epochs], ...]]:
    # a run of many short epochs re-plans often, and full lists made every checkpoint O(epochs^2)
    replans: list[list[Any]] = field(default_factory=list)
    elapsed_s: float = 0.0               # training time spent when the checkpoint was written

    @property
    def scale(self) -> float:
        """E / the recipe's epochs: how much epoch-counted settings are stretched."""
        return self.epochs / max(1, self.reference_epochs)

    @property
    def step_scale(self) -> float:
        return sum(self.epoch_steps) / max(1, self.reference_epochs * self.full_steps)

    def steps_after_replans(self) -> list[list[int]]:
        """The per-epoch step counts after each re-plan, in order."""
        counts, out = list(self.epoch_steps), []
        for _, first, tail in self.replans:
            counts = counts[:first] + run_length_decode(tail)
            out.append(counts)
        return out

    def add_replan(self, step: int, first: int, tail: list[int]) -> None:
        self.replans.append([int(step), int(first), run_length_encode(tail)])

    def to_dict(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "epoch_steps": list(self.epoch_steps), "replans": [list(r) for r in self.replans]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BudgetPlan:
        return cls(**d)


def run_length_encode(values: list[int]) -> list[list[int]]:
    """``[13, 13, 12]`` -> ``[[13, 2], [12, 1]]``."""
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][0] == int(v):
            out[-1][1] += 1
        else:
            out.append([int(v), 1])
    return out


def run_length_decode(runs: list[list[int]]) -> list[int]:
    return [int(v) for v, n in runs for _ in range(int(n))]


def size_plan(budget_s: float, est: Estimate, *, full_steps: int, reference_epochs: int) -> BudgetPlan:
    """The fewest epochs (of at most `full_steps` steps) that fill `budget_s` (module doc, 2)."""
    per_full_epoch = full_steps * est.step_s + est.pre_s + est.post_s
    epochs = int(min(MAX_EPOCHS, max(1, math.ceil(budget_s / max(per_full_epoch, 1e-9)))))
    steps = int(math.floor((budget_s / epochs - est.pre_s - est.post_s) / max(est.step_s, 1e-9)))
    if steps < 1:
        log.warning("time budget %.0f s is shorter than one epoch's fixed work (%.1f s): training 1 epoch of 1 step",
                    budget_s, est.pre_s + est.post_s + est.step_s)
    steps = min(full_steps, max(1, steps))
    return BudgetPlan(budget_s=budget_s, epochs=epochs, reference_epochs=reference_epochs, full_steps=full_steps,
                      epoch_steps=[steps] * epochs, estimate=dataclasses.asdict(est))


def method_config(cfg: TrainConfig, plan: BudgetPlan | None) -> TrainConfig:
    """`cfg` with the method's epoch-counted hyper-parameters stretched by ``plan.scale`` (DAC's
    ``threshold_epochs``, SwAV's ``epoch_queue_starts``): what the method is built from."""
    from deepclust.losses.dac import CODE_EPOCHS, PAPER_MEET_LAMBDA, PAPER_STEP
    from deepclust.methods import METHODS
    from deepclust.methods import method_config as typed

    if plan is None or cfg.method.lower().replace("-", "_") not in METHODS:
        return cfg   # a custom method's settings are its own

    defaults = typed(cfg.method, cfg.method_kwargs)
    kwargs = dict(cfg.method_kwargs)
    for key in EPOCH_KWARGS:
        if not hasattr(defaults, key):
            continue
        value = getattr(defaults, key)
        if key == "threshold_epochs":
            natural = PAPER_MEET_LAMBDA / PAPER_STEP if getattr(defaults, "thresholds", "paper") == "paper" \
                else CODE_EPOCHS
            meet = (natural if value is None else float(value)) * plan.scale
            kwargs[key] = max(1e-3, min(meet, max(1, plan.epochs - 1)))   # they meet by the last epoch
        elif value is not None:
            kwargs[key] = int(round(float(value) * plan.scale))
    return dataclasses.replace(cfg, method_kwargs=kwargs)


def stretch_method(method: Method, plan: BudgetPlan, method_kwargs: dict[str, Any] | None = None) -> None:
    """Stretch the method's epoch-counted settings in place: the last-layer freeze (epochs or
    iterations), and the `EPOCH_KWARGS` of `method_kwargs` (from `method_config`) in the
    method's ``config`` and attribute of the same name where it has them (DAC reads
    ``config.threshold_epochs``, SwAV keeps ``epoch_queue_starts``)."""
    method.freeze_last_layer_epochs = int(round(method.freeze_last_layer_epochs * plan.scale))
    method.freeze_last_layer_iters = int(round(method.freeze_last_layer_iters * plan.step_scale))
    config = getattr(method, "config", None)
    for key, value in (method_kwargs or {}).items():
        if key not in EPOCH_KWARGS:
            continue
        if dataclasses.is_dataclass(config) and hasattr(config, key):
            setattr(config, key, value)
        if hasattr(method, key):
            setattr(method, key, value)


def build_schedules(method: Method, cfg: TrainConfig, plan: BudgetPlan, *, lr: float,
                    steps_per_epoch: int) -> Schedules:
    """The run's schedules over the planned steps, with the plan's re-plans replayed (resume)."""
    wd_end = cfg.weight_decay if cfg.weight_decay_end is None else cfg.weight_decay_end
    schedules = Schedules.build(method, lr=lr, min_lr=cfg.min_lr, warmup_epochs=cfg.warmup_epochs,
                                weight_decay=cfg.weight_decay, weight_decay_end=wd_end, epochs=plan.epochs,
                                steps_per_epoch=steps_per_epoch, epoch_steps=plan.epoch_steps,
                                warmup_scale=plan.scale)
    for (step, _, _), counts in zip(plan.replans, plan.steps_after_replans()):
        schedules.replan(int(step), counts)
    return schedules


class BudgetController:
    """The loop's side of a budget: measures each epoch and re-plans what is left (module doc, 4).

    The loop calls `begin_epoch` before the epoch hook, `begin_steps` before the first step,
    `after_step` after every step (True: the epoch's planned steps are done) and `end_epoch`
    after the epoch's evaluation and checkpoint."""

    def __init__(self, plan: BudgetPlan, schedules: Schedules, *, started: float):
        self.plan, self.schedules = plan, schedules
        self.started = started - plan.elapsed_s       # perf_counter() at which the run's clock started
        est = plan.estimate
        self.step_s, self.pres, self.posts = est["step_s"], [est["pre_s"]], [est["post_s"]]
        self._measured_post = False
        self._epoch_start = self._steps_start = self._steps_end = time.perf_counter()
        self._rows = plan.full_steps

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def rows(self, epoch: int) -> int:
        """Rows of the epoch's sample order: room for a re-plan to lengthen the epoch."""
        return max(self.schedules.steps_in_epoch(epoch), self.plan.full_steps)

    def begin_epoch(self) -> None:
        self._epoch_start = time.perf_counter()

    def begin_steps(self, epoch: int) -> None:
        self._steps_start = time.perf_counter()
        self.pres.append(self._steps_start - self._epoch_start)
        self._rows = self.rows(epoch)

    def after_step(self, epoch: int, done: int, step: int) -> bool:
        planned = self.schedules.steps_in_epoch(epoch)
        every = 1 if epoch == self.plan.epochs - 1 else max(1, planned // 4)   # the last epoch: every step
        if 2 <= done < planned and done % every == 0:
            self._replan(epoch, done, step, (time.perf_counter() - self._steps_start) / done)
            planned = self.schedules.steps_in_epoch(epoch)
        if done < planned:
            return False
        self._steps_end = time.perf_counter()
        self.step_s = (self._steps_end - self._steps_start) / done
        return True

    def end_epoch(self, epoch: int, step: int) -> None:
        post = time.perf_counter() - self._steps_end
        log.debug("time budget: epoch %d: %.3f s before the steps, %.4f s/step, %.3f s after (estimated %.3f, %.3f)",
                  epoch + 1, self.pres[-1], self.step_s, post, self.plan.estimate["pre_s"],
                  self.plan.estimate["post_s"])
        self.posts = ([] if not self._measured_post else self.posts) + [post]   # the probe's guess goes
        self._measured_post = True
        if epoch + 1 < self.plan.epochs:
            self._replan(epoch + 1, 0, step, self.step_s)

    def _replan(self, epoch: int, done: int, step: int, step_s: float) -> None:
        counts = self.schedules.epoch_steps or [self.schedules.steps_per_epoch] * self.plan.epochs
        new = [int(n) for n in _rank0(self._proposal(list(counts), epoch, done, step_s))]  # DDP: rank 0's
        if new != list(counts):
            log.debug("time budget: %.1f s left, %.3f s/step: epoch steps %s -> %s",
                      self.plan.budget_s - self.elapsed(), step_s, counts[epoch:], new[epoch:])
            self.schedules.replan(step, new)
            first = next(i for i, (a, b) in enumerate(zip(counts, new)) if a != b)
            self.plan.add_replan(step, first, new[first:])

    def _proposal(self, counts: list[int], epoch: int, done: int, step_s: float) -> list[int]:
        """Per-epoch step counts that fill the time left at the measured rate (`counts` if close)."""
        pre, post = self.pres[-1], float(np.mean(self.posts))
        after = self.plan.epochs - epoch - 1                # epochs after this one
        fixed = post + after * (pre + post) + (pre if done == 0 else 0.0)
        available = (self.plan.budget_s - self.elapsed() - fixed) / max(step_s, 1e-9)
        planned = (counts[epoch] - done) + sum(counts[epoch + 1:])
        if abs(available - planned) < max(1.0, 0.005 * planned):
            return counts
        most = MAX_STRETCH * self.plan.full_steps
        if done:   # this epoch's rest shrinks or grows in proportion, within the rows of its order
            now = int(min(self._rows - done, max(0, round((counts[epoch] - done) * available / max(1, planned)))))
            new, rest, epochs = counts[:epoch + 1], available - now, after
            new[epoch] = done + now
        else:      # at an epoch boundary: spread evenly over this and the later epochs
            new, rest, epochs = counts[:epoch], available, after + 1
        if epochs:
            base, extra = divmod(int(round(max(0.0, rest))), epochs)
            new += [int(min(most, max(1, base + (1 if j < extra else 0)))) for j in range(epochs)]
        return new

    def state(self) -> dict[str, Any]:
        """The plan for state.json, with the training time spent so far."""
        self.plan.elapsed_s = self.elapsed()
        return self.plan.to_dict()


def describe(plan: BudgetPlan, cfg: TrainConfig, images_per_step: int) -> str:
    """The log line that says what the budget chose and why."""
    est = Estimate(**plan.estimate)
    return (f"time budget {cfg.time_budget} ({plan.budget_s:.0f} s): measured {est.step_s:.3f} s/step "
            f"({images_per_step / max(est.step_s, 1e-9):.0f} img/s) and {est.pre_s + est.post_s:.1f} s of per-epoch "
            f"work (epoch hook {est.pre_s:.1f} s; evaluation and checkpoint {est.post_s:.1f} s) -> {plan.epochs} "
            f"epoch(s) of {plan.epoch_steps[0]} step(s) (a full pass is {plan.full_steps}); epoch-counted settings "
            f"scaled x{plan.scale:.3g} from the recipe's {plan.reference_epochs} epochs")


def resumed_epochs(cfg: TrainConfig, state: dict[str, Any] | None) -> TrainConfig:
    """A resumed budget run keeps its sized number of epochs (so no 'epochs changed' warning)."""
    plan = (state or {}).get("extra", {}).get("budget")
    return cfg if not plan else dataclasses.replace(cfg, epochs=int(plan["epochs"]))


def plan_budget(method: Method, cfg: TrainConfig, ctx: TrainContext, *, state: dict[str, Any] | None,
                started: float) -> tuple[TrainConfig, BudgetPlan | None]:
    """The run's plan: the stored one when resuming, else probed (on a copy of `method`, after its
    ``on_train_start``) and sized now (rank 0's, under DDP). Stretches the method's epoch-counted
    settings in place (`stretch_method`) and returns the config with ``epochs = E``."""
    stored = (state or {}).get("extra", {}).get("budget")
    if stored:
        plan = BudgetPlan.from_dict(stored)
    elif cfg.time_budget:
        budget_s = parse_duration(cfg.time_budget)
        assert budget_s is not None
        est = probe(method, cfg, ctx, clip_grad=cfg.clip_grad)
        plan = size_plan(budget_s - (time.perf_counter() - started), est, full_steps=ctx.steps_per_epoch,
                         reference_epochs=cfg.epochs)
        plan.budget_s = budget_s
        plan = BudgetPlan.from_dict(_rank0(plan.to_dict()))
    else:
        return cfg, None
    cfg = dataclasses.replace(cfg, epochs=plan.epochs)
    stretch_method(method, plan, method_config(cfg, plan).method_kwargs)
    ctx.total_epochs = plan.epochs
    if ctx.rank == 0 and not stored:
        log.info("%s", describe(plan, cfg, ctx.batch_size * ctx.world_size))
    return cfg, plan


def _rank0(value: Any) -> Any:
    """Rank 0's `value` on every process (timings differ between processes); `value` itself alone."""
    from deepclust.core.distributed import is_dist

    if not is_dist():
        return value
    import torch.distributed as dist

    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
