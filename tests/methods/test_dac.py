"""DAC: thresholds from StepState.epoch, pairs over the batch, the k-way head as the
method's clustering (cluster_head / cluster_logits), any backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepclust.losses.dac import dac_thresholds
from deepclust.methods import build_method
from deepclust.methods.common import MethodConfigError
from methods_helpers import GENTLE_VIEWS, pattern_images, run_step, step_state, tiny_backbone


def test_thresholds_follow_the_epoch_of_the_step_state():
    method = build_method("dac", tiny_backbone(), k=3, img_size=8, hidden_dim=8, thresholds="code")
    images, _ = pattern_images(4)
    for epoch in (0, 7, 60):
        out = run_step(method, images, step_state(epoch=epoch))
        assert (out.logs["upper"], out.logs["lower"]) == pytest.approx(dac_thresholds(epoch, "code"))
        assert set(out.terms) == {"dac"} and torch.isfinite(out.loss)


def test_head_argmax_is_the_clustering():
    method = build_method("dac", tiny_backbone(), k=3, img_size=8, hidden_dim=0).eval()
    x = method.preprocess(torch.from_numpy(pattern_images(4)[0]))
    logits = method.cluster_logits(x)
    assert logits is not None and logits.shape == (12, 3)
    assert method.cluster_head() is method.head


def test_dac_training_steps_lower_the_loss_on_easy_patterns():
    torch.manual_seed(0)
    images, _ = pattern_images(16)
    method = build_method("dac", tiny_backbone(), k=3, img_size=8, hidden_dim=16,
                          augment={**GENTLE_VIEWS, "n_global": 1})
    opt = torch.optim.Adam(method.parameters(), lr=3e-3)
    x = torch.from_numpy(images)
    losses = []
    for _ in range(30):
        out = run_step(method, x, step_state(epoch=0))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_clean_targets_select_pairs_on_the_unaugmented_images(monkeypatch):
    torch.manual_seed(0)
    images, _ = pattern_images(4)
    method = build_method("dac", tiny_backbone(), k=3, img_size=8, hidden_dim=8, targets="clean",
                          augment={**GENTLE_VIEWS, "n_global": 2})
    seen = {}
    loss_fn = method.loss_fn.forward

    def spy(logits, **kwargs):
        seen.update(kwargs, logits=logits)
        return loss_fn(logits, **kwargs)

    monkeypatch.setattr(method.loss_fn, "forward", spy)
    out = run_step(method, images, step_state(epoch=0))
    n = len(images)
    select = seen["select_logits"]
    assert seen["logits"].shape == select.shape == (2 * n, 3)
    assert not select.requires_grad and torch.equal(select[:n], select[n:])  # one clean row per image, per view
    with torch.no_grad():
        method.train()
        clean = method.head(method.backbone(method.encoder().preprocess(torch.from_numpy(images))))
    assert torch.allclose(select[:n], clean, atol=1e-5)
    assert torch.isfinite(out.loss) and out.loss.requires_grad
    with pytest.raises(MethodConfigError):
        build_method("dac", tiny_backbone(), k=3, img_size=8, targets="labels")


def test_local_crops_and_bad_settings_are_refused():
    with pytest.raises(MethodConfigError):
        build_method("dac", tiny_backbone(), k=3, img_size=8, augment={"n_local": 2})
    with pytest.raises(MethodConfigError):
        build_method("dac", tiny_backbone(), k=1, img_size=8)
    with pytest.raises(MethodConfigError):
        build_method("dac", tiny_backbone(), k=3, img_size=8, threshold_epochs=0.0)
