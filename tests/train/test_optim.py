"""Optimisers: LARS against a direct computation; build_optimizer groups and per-step hyper-parameters."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepclust.errors import DeepclustError
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
