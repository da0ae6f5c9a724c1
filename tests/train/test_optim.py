"""LARS against a direct computation, schedules, EMA, the collapse watch and TrainConfig."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from deepclust.core.ema import ema_update_
from deepclust.errors import CollapseError, DeepclustError
from deepclust.train.config import TrainConfig, resolve_config_path
from deepclust.train.monitor import check_collapse, collapse_stats
from deepclust.train.optim import LARS, build_optimizer, set_step_hyperparameters


def test_lars_matches_direct_computation():
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(3, 4))
    b = nn.Parameter(torch.randn(3))
    grads = [(torch.randn(3, 4), torch.randn(3)) for _ in range(2)]
    lr, mom, wd, eta = 0.5, 0.9, 0.01, 0.001
    opt = LARS([w, b], lr=lr, momentum=mom, weight_decay=wd, eta=eta)

    w_ref, b_ref = w.detach().clone(), b.detach().clone()
    buf_w, buf_b = torch.zeros_like(w_ref), torch.zeros_like(b_ref)
    for gw, gb in grads:
        w.grad, b.grad = gw.clone(), gb.clone()
        opt.step()
        # weight matrix: decay, then trust ratio eta * ||w|| / ||g + wd w||
        u = gw + wd * w_ref
        u = u * (eta * w_ref.norm() / u.norm())
        buf_w = mom * buf_w + u
        w_ref = w_ref - lr * buf_w
        # bias: excluded from adaptation and weight decay
        buf_b = mom * buf_b + gb
        b_ref = b_ref - lr * buf_b
    torch.testing.assert_close(w.detach(), w_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.detach(), b_ref, rtol=1e-6, atol=1e-7)


def test_lars_zero_weight_tensor_gets_unit_trust_ratio():
    w = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([w], lr=1.0, momentum=0.0, weight_decay=0.0)
    w.grad = torch.ones(2, 2)
    opt.step()
    assert torch.equal(w.detach(), -torch.ones(2, 2))


def test_build_optimizer_and_step_hyperparameters_keep_no_decay_groups_at_zero():
    model = nn.Linear(3, 2)
    opt = build_optimizer("sgd", [{"params": [model.weight], "weight_decay": 0.1},
                                  {"params": [model.bias], "weight_decay": 0.0, "lr_scale": 0.5}], lr=1.0)
    set_step_hyperparameters(opt, lr=0.2, weight_decay=0.3)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.3, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]
    with pytest.raises(DeepclustError, match="adamw, sgd, lars"):
        build_optimizer("adam2", [{"params": [model.weight]}], lr=1.0)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(DeepclustError, match="no trainable parameters"):
        build_optimizer("sgd", [{"params": list(frozen.parameters())}], lr=1.0)


def test_ema_update():
    torch.manual_seed(0)
    student, teacher = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    student.weight.data.normal_()
    student.running_mean.normal_()
    student.num_batches_tracked += 7
    t0 = teacher.weight.detach().clone()
    ema_update_(teacher, student, momentum=0.9)
    torch.testing.assert_close(teacher.weight.detach(), 0.9 * t0 + 0.1 * student.weight.detach())
    torch.testing.assert_close(teacher.running_mean, 0.1 * student.running_mean)
    assert int(teacher.num_batches_tracked) == 7
    with pytest.raises(ValueError, match="differ"):
        ema_update_(nn.Linear(2, 2), nn.Sequential(nn.Linear(2, 2)), 0.9)


def test_collapse_stats_on_spread_and_collapsed_embeddings():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 32))
    stats = collapse_stats(spread, k=4)
    assert stats.rel_std == pytest.approx(stats.emb_std * math.sqrt(32))
    assert 0.8 < stats.rel_std < 1.1 and stats.n_clusters_used == 4
    check_collapse(stats, epoch=0, k=4)  # healthy: no error

    constant = np.ones((200, 32)) + 1e-9 * rng.normal(size=(200, 32))
    with pytest.raises(CollapseError, match="stopped varying"):
        check_collapse(collapse_stats(constant, k=4), epoch=2, k=4)

    # a k-way head that sends everything to cluster 2: one cluster used, zero entropy
    logits = np.zeros((50, 4))
    logits[:, 2] = 20.0
    head = collapse_stats(spread[:50], logits, k=4)
    assert head.n_clusters_used == 1 and head.entropy == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(CollapseError, match="one cluster.*lower learning rate"):
        check_collapse(head, epoch=0, k=4)
    with pytest.warns(RuntimeWarning, match="collapsed"):
        check_collapse(head, epoch=0, k=4, raise_error=False)
    # an untrained head: the same argmax everywhere but near-uniform soft assignments -> not collapsed
    weak = np.zeros((50, 4))
    weak[:, 2] = 0.1
    with pytest.warns(RuntimeWarning, match="may be collapsing"):
        check_collapse(collapse_stats(spread[:50], weak, k=4), epoch=0, k=4)
    # uniform soft assignments: entropy log k
    uniform = collapse_stats(spread[:50], rng.normal(size=(50, 4)) * 1e-3, k=4)
    assert uniform.entropy == pytest.approx(math.log(4), abs=1e-4)


def test_collapse_warns_when_few_clusters_are_used():
    rng = np.random.default_rng(1)
    logits = np.zeros((40, 8))
    logits[np.arange(40), rng.integers(0, 2, 40)] = 5.0  # 2 of 8 clusters
    stats = collapse_stats(rng.normal(size=(40, 16)), logits, k=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_collapse(stats, epoch=0, k=8)
    assert any("may be collapsing" in str(w.message) for w in caught)


def test_config_yaml_overrides_and_sets(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("method: swav\nmethod_kwargs: {n_prototypes: 30}\nepochs: 5\nlr: 0.6\noptimizer: lars\n")
    cfg = TrainConfig.load(recipe, overrides={"epochs": 7, "lr": None},
                           sets=["method_kwargs.epsilon=0.03", "amp=off", "weight_decay_end=0.4"])
    assert (cfg.method, cfg.epochs, cfg.lr, cfg.optimizer, cfg.amp) == ("swav", 7, 0.6, "lars", "off")
    assert cfg.method_kwargs == {"n_prototypes": 30, "epsilon": 0.03} and cfg.weight_decay_end == 0.4
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert resolve_config_path(str(recipe)) == recipe


def test_config_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(DeepclustError, match="unknown training config key.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(DeepclustError, match="epochs must be >= 1"):
        TrainConfig(epochs=0)
    with pytest.raises(DeepclustError, match="optimizer must be"):
        TrainConfig(optimizer="adam")
    with pytest.raises(DeepclustError, match="key=value"):
        TrainConfig.load(sets=["epochs"])
    with pytest.raises(DeepclustError, match="not found"):
        resolve_config_path("no_such_recipe_xyz")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(DeepclustError, match="mapping"):
        TrainConfig.load(bad)
