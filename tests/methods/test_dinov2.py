"""DINOv2-style training: KoLeo as a weighted term, DINOv2's half-masked batches, Sinkhorn
centring selectable, LayerScale / register tokens in the ViT, DINOv2's schedules."""

from __future__ import annotations

import numpy as np
import torch

from deepclust.methods import build_method
from deepclust.models.backbones import build_backbone
from methods_helpers import run_step, step_state

SMALL = dict(out_dim=16, patch_out_dim=12, hidden_dim=16, bottleneck_dim=8, augment={"n_local": 2, "local_size": 8})


def vit(**kw):
    return build_backbone("vit_tiny", img_size=16, depth=1, embed_dim=24, num_heads=2, patch_size=4, **kw)


def images(n=4):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3)).astype(np.uint8)


def test_terms_weights_and_exactly_half_of_the_global_crops_masked():
    torch.manual_seed(0)
    method = build_method("dinov2", vit(), k=3, img_size=16, **SMALL)
    batch = method.collate({"images": torch.from_numpy(images(6)), "index": torch.arange(6)}, step_state())
    assert int((batch["masks"].sum(dim=1) > 0).sum()) <= 6 and batch["masks"].shape == (12, 16)
    assert method.make_masks(12).any(dim=1).sum() <= 6
    out = run_step(method, images(), step_state(epoch=1))
    assert set(out.terms) == {"cls", "patch", "koleo"} and out.weights["koleo"] == 0.1
    assert method.patch_head is not None            # separate heads by default


def test_sinkhorn_centring_runs_and_keeps_no_center():
    method = build_method("dinov2", vit(), k=3, img_size=16, centering="sinkhorn", **SMALL)
    out = run_step(method, images(), step_state(epoch=1))
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.all(method.cls_loss.center.value == 0)


def test_teacher_schedule_is_dinov2s():
    method = build_method("dinov2", vit(), k=3, img_size=16, **SMALL)
    sched = method.teacher_schedule()
    assert sched.momentum == 0.992 and sched.momentum_end == 1.0 and sched.per_iteration
    assert method.freeze_last_layer_epochs == 1


def test_layerscale_and_register_tokens_in_the_vit():
    trunk = vit(layerscale_init=1e-5, num_register_tokens=2)
    assert torch.allclose(trunk.blocks[0].ls1.gamma, torch.full((24,), 1e-5))
    x = torch.randn(3, 3, 16, 16)
    out = trunk.forward_features(x)
    assert out["patch"].shape == (3, 16, 24) and trunk.num_prefix_tokens == 3
    assert trunk.get_last_selfattention(x).shape == (3, 2, 19, 19)
    method = build_method("dinov2", trunk, k=3, img_size=16, **SMALL)
    run_step(method, images(), step_state(epoch=1)).loss.backward()
    assert trunk.register_tokens.grad is not None and trunk.blocks[0].ls2.gamma.grad is not None
