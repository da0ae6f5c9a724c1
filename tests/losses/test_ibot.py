"""iBOT's patch loss against a token-by-token loop of its formula (iBOT Eq. 2 / DINOv2's
masks_weight), gradients included: only masked tokens count, each image is normalised by
its own number of masked tokens, unmasked images contribute nothing but count in B."""

from __future__ import annotations

import math

import pytest
import torch

from deepclust.losses.ibot import iBOTPatchLoss


def loop_patch_loss(s, t, masks, center, tau_t, tau_s=0.1):
    b_total = s.shape[0]
    total = 0.0
    for b in range(b_total):
        n_masked = int(masks[b].sum())
        acc = 0.0
        for n in range(s.shape[1]):
            if not masks[b, n]:
                continue
            p_t = torch.softmax((t[b, n] - center) / tau_t, dim=0)
            log_p_s = torch.log_softmax(s[b, n] / tau_s, dim=0)
            acc = acc + sum(-p_t[k] * log_p_s[k] for k in range(s.shape[2]))
        total = total + acc / max(1, n_masked)
    return total / b_total


def _inputs(seed=0, b=4, n=6, k=5):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(b, n, k, generator=g, requires_grad=True)
    t = torch.randn(b, n, k, generator=g)
    masks = torch.zeros(b, n, dtype=torch.bool)
    masks[0, [1, 2, 4]] = True
    masks[1, 0] = True
    masks[3, :] = True          # image 2 is unmasked
    return s, t, masks


def test_patch_loss_and_gradient_match_the_loop():
    s, t, masks = _inputs()
    loss_fn = iBOTPatchLoss(5)
    loss_fn.center.value.copy_(torch.randn(1, 5))
    center = loss_fn.center.value[0].clone()
    got = loss_fn(s, t, masks, teacher_temp=0.05, update_center=False)
    s2 = s.detach().clone().requires_grad_(True)
    want = loop_patch_loss(s2, t, masks, center, 0.05)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-6)
    assert torch.all(s.grad[~masks] == 0)          # unmasked tokens get no gradient
    assert torch.all(s.grad[2] == 0)               # the unmasked image contributes nothing


def test_each_image_is_normalised_by_its_own_masked_count():
    s, t, _ = _inputs()
    masks = torch.zeros(4, 6, dtype=torch.bool)
    masks[0, 0] = True
    one = iBOTPatchLoss(5)(s, t, masks, teacher_temp=0.05, update_center=False)
    masks[0, :] = True
    per_token = iBOTPatchLoss(5)(s, t, masks, teacher_temp=0.05, update_center=False)
    # identical tokens: a mean over 6 equal terms equals one of them
    s_same = s.detach()[:, :1].expand(-1, 6, -1).contiguous()
    t_same = t[:, :1].expand(-1, 6, -1).contiguous()
    assert iBOTPatchLoss(5)(s_same, t_same, masks, teacher_temp=0.05, update_center=False).item() == \
        pytest.approx(one.item(), rel=1e-5)
    assert per_token.item() != pytest.approx(one.item() * 6)


def test_no_masked_token_gives_zero_with_a_graph():
    s, t, _ = _inputs()
    loss = iBOTPatchLoss(5)(s, t, torch.zeros(4, 6, dtype=torch.bool), teacher_temp=0.05)
    assert loss.item() == 0.0 and loss.requires_grad


def test_patch_center_moves_towards_the_mean_of_all_patch_tokens():
    s, t, masks = _inputs()
    loss_fn = iBOTPatchLoss(5, center_momentum=0.9)
    loss_fn(s, t, masks, teacher_temp=0.05)
    assert torch.allclose(loss_fn.center.value[0], 0.1 * t.reshape(-1, 5).mean(0), atol=1e-6)


def test_sinkhorn_targets_use_no_center_and_are_distributions():
    s, t, masks = _inputs()
    loss_fn = iBOTPatchLoss(5, centering="sinkhorn")
    loss = loss_fn(s, t, masks, teacher_temp=0.05)
    assert math.isfinite(loss.item()) and torch.all(loss_fn.center.value == 0)
    q = loss_fn.teacher_probs(t[masks], 0.05)
    assert torch.allclose(q.sum(1), torch.ones(len(q)), atol=1e-5)


def test_bad_shapes_are_errors():
    s, t, masks = _inputs()
    with pytest.raises(ValueError):
        iBOTPatchLoss(5)(s, t[:, :3], masks, teacher_temp=0.05)
