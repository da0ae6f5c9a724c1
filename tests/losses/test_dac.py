"""DAC's pair selection and loss against a pair-by-pair loop, gradients included, and its
threshold schedules against both definitions (the paper's and the authors' CIFAR-10 code),
end points included."""

from __future__ import annotations

import math

import pytest
import torch

from deepclust.losses.dac import DACLoss, dac_thresholds, label_features, select_pairs


def loop_dac(logits, upper, lower, eps=1e-7, select=None):
    """The paper's loss pair by pair; ``select``: other logits whose label features pick the pairs."""
    b = logits.shape[0]

    def features(z):
        p = torch.softmax(z, dim=1)
        return [p[i] / p[i].norm() for i in range(b)]

    f = features(logits)
    g = f if select is None else features(select)
    total, n = 0.0, 0
    for i in range(b):
        for j in range(b):
            if i == j:
                continue
            s = torch.clamp(torch.dot(f[i], f[j]), eps, 1 - eps)
            r = torch.dot(g[i], g[j]).item() if select is not None else s.item()
            if r > upper:
                total, n = total - torch.log(s), n + 1
            elif r < lower:
                total, n = total - torch.log(1 - s), n + 1
    return total / max(n, 1), n


def test_selection_masks_at_given_thresholds():
    sim = torch.tensor([[1.0, 0.96, 0.5], [0.96, 1.0, 0.2], [0.5, 0.2, 1.0]])
    same, diff = select_pairs(sim, upper=0.95, lower=0.455)
    assert same.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    assert diff.tolist() == [[False, False, False], [False, False, True], [False, True, False]]
    assert not (same & diff).any()


def test_label_features_are_unit_softmax_vectors():
    f = label_features(torch.randn(6, 4))
    assert torch.allclose(f.norm(dim=1), torch.ones(6)) and (f >= 0).all()


@pytest.mark.parametrize("upper, lower", [(0.95, 0.455), (0.8, 0.6), (0.5, 0.5)])
def test_loss_and_gradient_match_the_pair_loop(upper, lower):
    torch.manual_seed(0)
    logits = (torch.randn(7, 3) * 2).requires_grad_(True)
    got, fractions = DACLoss()(logits, upper=upper, lower=lower)
    logits2 = logits.detach().clone().requires_grad_(True)
    want, n = loop_dac(logits2, upper, lower)
    assert n > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    assert torch.allclose(logits.grad, logits2.grad, atol=1e-6)
    assert fractions["pairs_same"] + fractions["pairs_different"] == pytest.approx(n / 42)


def test_pairs_selected_on_other_logits_match_the_pair_loop_and_carry_no_gradient_there():
    torch.manual_seed(2)
    logits = (torch.randn(6, 3) * 2).requires_grad_(True)
    clean = (torch.randn(6, 3) * 2).requires_grad_(True)
    got, _ = DACLoss()(logits, upper=0.9, lower=0.6, select_logits=clean)
    logits2 = logits.detach().clone().requires_grad_(True)
    want, n = loop_dac(logits2, 0.9, 0.6, select=clean.detach())
    own, n_own = loop_dac(logits.detach(), 0.9, 0.6)
    assert n > 0 and (n, round(want.item(), 5)) != (n_own, round(own.item(), 5))
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    want.backward()
    assert torch.allclose(logits.grad, logits2.grad, atol=1e-6) and clean.grad is None
    with pytest.raises(ValueError, match="must match"):
        DACLoss()(logits, upper=0.9, lower=0.6, select_logits=clean[:4])


def test_no_selected_pair_gives_zero_with_a_graph():
    logits = torch.zeros(4, 3, requires_grad=True)   # all similarities 1: "same"... at u = 1 none
    loss, _ = DACLoss()(logits, upper=1.0, lower=0.0)
    assert loss.item() == 0.0 and loss.requires_grad


def test_global_batch_pairs_leave_out_only_the_own_diagonal():
    torch.manual_seed(1)
    everyone = torch.randn(8, 3)
    local = everyone[4:]
    got, _ = DACLoss()(local, upper=0.9, lower=0.5, all_logits=everyone, offset=4)
    full, _ = DACLoss()(everyone, upper=0.9, lower=0.5)
    assert math.isfinite(got.item()) and got.item() != full.item()


def test_paper_schedule_end_points_and_steps():
    assert dac_thresholds(0, "paper") == pytest.approx((0.95, 0.455))
    u1, l1 = dac_thresholds(1, "paper")
    assert (u1, l1) == pytest.approx((0.95 - 1.1 * 0.009, 0.455 + 0.1 * 1.1 * 0.009))
    for epoch in (46, 60, 500):      # lam reaches 0.45 after 45.45 epochs: u = l = 0.5
        assert dac_thresholds(epoch, "paper") == pytest.approx((0.5, 0.5))
        upper, lower = dac_thresholds(epoch, "paper")
        assert upper >= lower          # never crossed by float rounding (the loss checks l <= u)
    assert dac_thresholds(45, "paper")[0] > dac_thresholds(45, "paper")[1]


def test_code_schedule_end_points_and_equal_steps():
    assert dac_thresholds(0, "code") == pytest.approx((0.99, 0.80))
    assert dac_thresholds(50, "code") == pytest.approx((0.895, 0.895))
    assert dac_thresholds(80, "code") == pytest.approx((0.895, 0.895))
    for e in range(50):
        (u0, l0), (u1, l1) = dac_thresholds(e, "code"), dac_thresholds(e + 1, "code")
        assert u0 - u1 == pytest.approx(0.0019) and l1 - l0 == pytest.approx(0.0019)


def test_meet_epochs_compresses_either_schedule():
    assert dac_thresholds(10, "paper", meet_epochs=10) == pytest.approx((0.5, 0.5))
    assert dac_thresholds(5, "paper", meet_epochs=10) == pytest.approx((0.95 - 0.225, 0.455 + 0.0225))
    assert dac_thresholds(5, "code", meet_epochs=10) == pytest.approx(dac_thresholds(25, "code"))
    with pytest.raises(ValueError):
        dac_thresholds(1, "linear")
