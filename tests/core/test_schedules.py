"""Schedules against the official definitions (DINO's utils.cosine_scheduler and teacher
temperature schedule, DINOv2's CosineScheduler), end points included."""

import numpy as np
import pytest

from deepclust.core.schedules import cosine_momentum_schedule, cosine_schedule, scaled_lr, teacher_temp_schedule


def _dino_cosine_scheduler(base, final, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0.0):
    """DINO utils.cosine_scheduler, written out loop by loop."""
    warmup_iters = warmup_epochs * niter_per_ep
    out = []
    for i in range(warmup_iters):  # np.linspace(start, base, warmup_iters): both ends included
        frac = i / (warmup_iters - 1) if warmup_iters > 1 else 0.0
        out.append(start_warmup_value + (base - start_warmup_value) * frac)
    n = epochs * niter_per_ep - warmup_iters
    for t in range(n):
        out.append(final + 0.5 * (base - final) * (1 + np.cos(np.pi * t / n)))
    return np.array(out)


@pytest.mark.parametrize("epochs,niter,warmup", [(5, 4, 0), (5, 4, 1), (10, 3, 2), (2, 1, 2)])
def test_cosine_schedule_is_dinos_cosine_scheduler(epochs, niter, warmup):
    got = cosine_schedule(1.0, 0.1, epochs * niter, warmup_steps=warmup * niter, start_warmup=0.0)
    want = _dino_cosine_scheduler(1.0, 0.1, epochs, niter, warmup, 0.0)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_warmup_reaches_base_on_its_last_step():
    s = cosine_schedule(2.0, 0.0, total_steps=10, warmup_steps=4, start_warmup=0.5)
    np.testing.assert_allclose(s[:4], [0.5, 1.0, 1.5, 2.0])
    assert s[4] == pytest.approx(2.0)                # the cosine starts at base too
    assert len(s) == 10 and np.all(np.diff(s[4:]) < 0)


def test_rising_cosine_for_weight_decay():
    wd = cosine_schedule(0.04, 0.4, 5)
    assert wd[0] == pytest.approx(0.04) and np.all(np.diff(wd) > 0) and wd[-1] < 0.4


def test_teacher_momentum_is_the_cosine_from_m0_to_one():
    m = cosine_momentum_schedule(0.996, 1.0, 100)
    t = np.arange(100)
    np.testing.assert_allclose(m, 1.0 + 0.5 * (0.996 - 1.0) * (1 + np.cos(np.pi * t / 100)))
    assert m[0] == pytest.approx(0.996) and m[50] == pytest.approx(0.998) and m[-1] < 1.0


def test_teacher_temperature_per_epoch_reaches_final_at_epoch_w_minus_one():
    # DINO: np.concatenate((np.linspace(0.04, 0.07, W), np.ones(n - W) * 0.07))[epoch]
    W, n, niter = 4, 6, 3
    official = np.concatenate((np.linspace(0.04, 0.07, W), np.ones(n - W) * 0.07))
    s = teacher_temp_schedule(0.04, 0.07, W, n, niter)
    assert len(s) == n * niter
    for step in range(n * niter):
        assert s[step] == pytest.approx(official[step // niter])
    assert s[(W - 1) * niter] == pytest.approx(0.07)   # epoch W-1 already uses the final value
    assert s[(W - 2) * niter] < 0.07


def test_teacher_temperature_per_iteration_is_dinov2s():
    # DINOv2: CosineScheduler(base=final=T, total_iters=W*L, warmup_iters=W*L, start_warmup_value=T0)
    W, n, niter = 2, 4, 5
    s = teacher_temp_schedule(0.04, 0.07, W, n, niter, per_iteration=True)
    warm = np.linspace(0.04, 0.07, W * niter)
    np.testing.assert_allclose(s[: W * niter], warm)
    np.testing.assert_allclose(s[W * niter:], 0.07)
    assert len(s) == n * niter


def test_teacher_temperature_warmup_longer_than_the_run_is_cut():
    s = teacher_temp_schedule(0.04, 0.07, 30, 3, 2)
    np.testing.assert_allclose(s, np.repeat(np.linspace(0.04, 0.07, 30)[:3], 2))


def test_scaled_lr():
    assert scaled_lr(5e-4, 512) == pytest.approx(1e-3)


def test_scaled_lr_linear_and_sqrt_rules_against_their_definitions():
    for batch in (1, 32, 256, 1024, 4096):
        assert scaled_lr(4e-3, batch) == pytest.approx(4e-3 * batch / 256)
        assert scaled_lr(4e-3, batch, rule="sqrt") == pytest.approx(4e-3 * (batch / 1024) ** 0.5)
    assert scaled_lr(4e-3, 1024, rule="sqrt") == pytest.approx(4e-3)      # the reference batch: unchanged
    assert scaled_lr(4e-3, 256, rule="sqrt") == pytest.approx(2e-3)
    assert scaled_lr(1e-3, 64, reference_batch=64, rule="sqrt") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="linear.*sqrt"):
        scaled_lr(1e-3, 64, rule="cubic")


def test_train_config_lr_scaling_is_checked():
    from deepclust.errors import DeepclustError
    from deepclust.train.config import TrainConfig

    assert TrainConfig().lr_scaling == "linear"
    assert TrainConfig(lr_scaling="sqrt").lr_scaling == "sqrt"
    with pytest.raises(DeepclustError, match="lr_scaling must be linear or sqrt"):
        TrainConfig(lr_scaling="quadratic")
