"""Time budgets (deepclust.train.budget): parsing, sizing, stretching schedules, and a budgeted
run that ends on time with every schedule at its end value, also after a resume."""

from __future__ import annotations

import csv
import json
import time

import numpy as np
import pytest
import torch

from deepclust.core.schedules import cosine_schedule
from deepclust.errors import DeepclustError
from deepclust.methods.base import TeacherSchedule
from deepclust.train.budget import BudgetPlan, Estimate, method_config, parse_duration, size_plan
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from deepclust.train.step import Schedules, stretch_tail
from toy_method import ToyMethod, toy_cfg, toy_store

# torch.optim's first optimiser imports torch._dynamo (seconds on a busy machine): a one-off
# start-up cost a budget pays once per process, paid here so the budget test measures the loop
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("60m", 3600), ("2h", 7200), ("1h30m", 5400),
                                               ("1.5h", 5400), (" 10 m ", 600), ("2d", 172800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["", "60", "ten minutes", "5x", "-5m", "0s", "m", "1h 30", "31d", "5m5"])
def test_bad_durations_are_clear_errors(bad):
    with pytest.raises(DeepclustError, match="time budget"):
        parse_duration(bad)
    with pytest.raises(DeepclustError, match="time budget"):
        TrainConfig(time_budget=bad)


def test_size_plan_fills_the_budget_with_the_fewest_epochs():
    est = Estimate(step_s=0.1, pre_s=2.0, post_s=3.0)           # a full epoch: 100 steps -> 15 s
    plan = size_plan(100.0, est, full_steps=100, reference_epochs=30)
    assert plan.epochs == 7                                      # ceil(100 / 15)
    assert plan.epoch_steps == [92] * 7                          # floor((100/7 - 5) / 0.1)
    assert plan.epochs * (plan.epoch_steps[0] * 0.1 + 5) <= 100 < plan.epochs * ((plan.epoch_steps[0] + 1) * 0.1 + 5)
    assert plan.scale == pytest.approx(7 / 30)
    tiny = size_plan(1.0, est, full_steps=100, reference_epochs=30)   # shorter than one epoch's fixed work
    assert (tiny.epochs, tiny.epoch_steps) == (1, [1])


def test_stretch_tail_keeps_the_past_the_current_value_and_the_end():
    values = cosine_schedule(1.0, 0.01, 50, warmup_steps=5)
    for total in (20, 50, 120):
        out = stretch_tail(values, 10, total)
        assert len(out) == total
        np.testing.assert_array_equal(out[:10], values[:10])
        assert out[10] == pytest.approx(values[10]) and out[-1] == pytest.approx(values[-1])
        assert np.all(np.diff(out[10:]) <= 1e-12)               # still the same decreasing cosine
    assert stretch_tail(values, 10, 11)[-1] == pytest.approx(values[-1])  # one step left: the end value


class _Teacher(ToyMethod):
    """The toy with a DINO-like teacher schedule, recording every step's scheduled values."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, int, float, float, float]] = []

    def teacher_schedule(self) -> TeacherSchedule:
        return TeacherSchedule(momentum=0.99, momentum_end=1.0, warmup_temp=0.04, temp=0.07, warmup_epochs=2)

    def after_optimizer_step(self, state) -> None:
        self.seen.append((state.epoch, state.step, state.lr, state.teacher_momentum, state.teacher_temp))
        super().after_optimizer_step(state)


def test_replan_keeps_end_values_and_per_epoch_temperatures():
    s = Schedules.build(_Teacher(), lr=0.5, min_lr=0.01, warmup_epochs=1, weight_decay=0.04, weight_decay_end=0.4,
                        epochs=4, steps_per_epoch=5, epoch_steps=[5, 5, 5, 5])
    ends = (s.lr[-1], s.weight_decay[-1], s.teacher_momentum[-1])
    s.replan(7, [5, 6, 9, 2])
    assert len(s.lr) == 22 and s.steps_in_epoch(2) == 9
    assert (s.lr[-1], s.weight_decay[-1], s.teacher_momentum[-1]) == pytest.approx(ends)
    # teacher temperature: per epoch, warm-up over 2 epochs, constant within each new epoch
    np.testing.assert_allclose(s.teacher_temp, [0.04] * 5 + [0.07] * 17)
    assert s.state(3, 21).teacher_temp == pytest.approx(0.07)


def test_method_settings_counted_in_epochs_are_stretched():
    plan = BudgetPlan(budget_s=60, epochs=6, reference_epochs=60, full_steps=10, epoch_steps=[10] * 6, estimate={})
    dac = method_config(TrainConfig(method="dac", epochs=60, method_kwargs={"threshold_epochs": 50}), plan)
    assert dac.method_kwargs["threshold_epochs"] == pytest.approx(5.0)       # 50 x 6/60: they still meet
    paper = method_config(TrainConfig(method="dac", epochs=60), plan)        # the paper's pace: ~45 epochs
    assert 4 < paper.method_kwargs["threshold_epochs"] <= 5                  # ... stretched, met by the last epoch
    swav = method_config(TrainConfig(method="swav", epochs=60, method_kwargs={"epoch_queue_starts": 30}), plan)
    assert swav.method_kwargs["epoch_queue_starts"] == 3


def _log(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "log.csv") as fh:
        return list(csv.DictReader(fh))


def _planned(cfg: TrainConfig, plan: BudgetPlan) -> Schedules:
    """The schedules a plan starts from (re-plans stretch them and keep their end values)."""
    return Schedules.build(_Teacher(), lr=cfg.lr * cfg.batch_size / 256, min_lr=cfg.min_lr,
                           warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay,
                           weight_decay_end=cfg.weight_decay_end, epochs=plan.epochs, steps_per_epoch=plan.full_steps,
                           epoch_steps=plan.epoch_steps, warmup_scale=plan.scale)


def test_budget_run_ends_on_time_with_every_schedule_at_its_end(tmp_path):
    budget = 12.0
    method = _Teacher()
    cfg = toy_cfg(epochs=3, time_budget="12s", min_lr=1e-5, warmup_epochs=1)
    start = time.perf_counter()
    train(cfg, toy_store(256), tmp_path / "run", method=method, progress=False)
    wall = time.perf_counter() - start
    assert abs(wall - budget) <= 0.03 * budget, f"{wall:.2f} s for a budget of {budget} s"

    state = json.loads((tmp_path / "run" / "state.json").read_text())
    plan = BudgetPlan.from_dict(state["extra"]["budget"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == plan.epochs and saved["time_budget"] == "12s"
    final_steps = plan.steps_after_replans()[-1] if plan.replans else plan.epoch_steps
    assert state["step"] == sum(final_steps) == len(method.seen)            # every planned step ran
    assert len(_log(tmp_path / "run")) == plan.epochs                        # every epoch ran
    # the schedules ran to their ends: the last step got the end values of the schedules the plan
    # was built with (re-plans stretch them, never cut them), the cosine lr near min_lr
    planned = _planned(cfg, plan)
    epoch, step, lr, momentum, temp = method.seen[-1]
    assert epoch == plan.epochs - 1 and step == state["step"] - 1
    assert lr == pytest.approx(planned.lr[-1]) and momentum == pytest.approx(planned.teacher_momentum[-1])
    assert lr < cfg.min_lr + 0.05 * cfg.lr * cfg.batch_size / 256 and momentum > 0.999
    assert temp == pytest.approx(0.07)


def test_resumed_budget_run_keeps_its_plan(tmp_path):
    cfg = toy_cfg(epochs=2, time_budget="3s")
    first = _Teacher()
    first.interrupt_at_step = 30
    with pytest.raises(KeyboardInterrupt):
        train(cfg, toy_store(), tmp_path / "run", method=first, progress=False)
    checkpoint = json.loads((tmp_path / "run" / "state.json").read_text())
    saved = checkpoint["extra"]["budget"]
    second = _Teacher()
    train(cfg, toy_store(), tmp_path / "run", method=second, resume=True, progress=False)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    plan = state["extra"]["budget"]
    assert plan["epochs"] == saved["epochs"] and plan["epoch_steps"] == saved["epoch_steps"]
    assert len(_log(tmp_path / "run")) == plan["epochs"]
    # the resumed part continued the stored schedule and ended at its end
    assert second.seen[0][1] == checkpoint["step"] and saved["elapsed_s"] > 0
    planned = _planned(cfg, BudgetPlan.from_dict(plan))
    assert second.seen[-1][2] == pytest.approx(planned.lr[-1])
    assert second.seen[-1][3] == pytest.approx(planned.teacher_momentum[-1])


def test_dac_thresholds_meet_by_the_last_planned_epoch():
    from deepclust.train.budget import stretch_method
    from deepclust.train.builder import build_method_from_config

    cfg = TrainConfig(method="dac", epochs=60, image_size=8, backbone_kwargs={"widths": [4, 8, 8]},
                      method_kwargs={"hidden_dim": 8})
    method = build_method_from_config(cfg)
    plan = BudgetPlan(budget_s=60, epochs=5, reference_epochs=60, full_steps=10, epoch_steps=[10] * 5, estimate={})
    stretch_method(method, plan, method_config(cfg, plan).method_kwargs)
    upper, lower = method.thresholds(plan.epochs - 1)
    assert upper == pytest.approx(lower)                                   # met in the last epoch
    assert method.thresholds(0)[0] > method.thresholds(2)[0] > upper       # and moved there step by step


def test_deepcluster_budget_run_probes_its_epoch_hook(tmp_path):
    """DeepCluster's k-means runs per epoch: the probe times it on a subset, the run ends on time."""
    store = toy_store(96)
    cfg = TrainConfig(method="deepcluster", epochs=10, image_size=8, batch_size=16, k=4, knn_every=0,
                      backbone_kwargs={"widths": [4, 8, 8]}, method_kwargs={"n_clusters": 4, "pca_dim": 4},
                      monitor_samples=64, device="cpu", time_budget="6s", optimizer="sgd", lr=0.1)
    start = time.perf_counter()
    train(cfg, store, tmp_path / "dc", progress=False)
    assert abs(time.perf_counter() - start - 6.0) <= 0.1 * 6.0
    state = json.loads((tmp_path / "dc" / "state.json").read_text())
    assert len(_log(tmp_path / "dc")) == state["extra"]["budget"]["epochs"] == state["epoch"]
