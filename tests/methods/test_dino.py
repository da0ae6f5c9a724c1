"""DINO: the loop's EMA update of the declared pairs, teacher-only gradients, embedding from
the teacher, k-way head logits, patch-aligned crops for ViTs, and short runs (conv net and
ViT at 32 px through `train()`)."""

import copy
import csv

import numpy as np
import pytest
import torch

from deepclust.cluster import kmeans
from deepclust.core.schedules import cosine_momentum_schedule
from deepclust.methods import build_method
from deepclust.models.backbones import build_backbone
from deepclust.models.encoder import embed_images
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from deepclust.train.step import Schedules, optimizer_step
from methods_helpers import GENTLE_VIEWS, ArrayStore, pattern_images, run_step, step_state, tiny_backbone

torch.set_num_threads(1)
VIEWS = {**GENTLE_VIEWS, "n_local": 2, "local_size": 4, "local_scale": (0.3, 0.6), "local_blur_p": 0.0}


def _dino(**kw):
    kw = {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8, "augment": VIEWS, **kw}
    return build_method("dino", tiny_backbone(), k=3, img_size=8, **kw)


def test_teacher_is_an_ema_of_the_student_with_the_loops_cosine_momentum():
    """The loop updates each declared (teacher, student) pair with the scheduled momentum."""
    method = _dino(momentum_teacher=0.9)
    assert [(t is method.teacher_backbone, s is method.backbone) for t, s in method.ema_pairs()][0] == (True, True)
    assert method.ema_pairs()[1] == (method.teacher_head, method.head)
    schedules = Schedules.build(method, lr=0.0, min_lr=0.0, warmup_epochs=0, weight_decay=0.0,
                                weight_decay_end=0.0, epochs=2, steps_per_epoch=5)
    state = schedules.state(0, 3)
    m = cosine_momentum_schedule(0.9, 1.0, 10)[3]
    assert 0.9 < m < 1.0 and state.teacher_momentum == pytest.approx(m)
    teacher_before = copy.deepcopy(method.teacher_head.mlp[0].weight.detach())
    with torch.no_grad():
        for p in method.head.parameters():
            p.add_(1.0)
    images, _ = pattern_images(2)
    out = run_step(method, images, state)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.0)
    optimizer_step(method, opt, None, out.loss, state, clip_grad=0.0, params=[])
    student = method.head.mlp[0].weight.detach()
    want = m * teacher_before + (1 - m) * student
    assert torch.allclose(method.teacher_head.mlp[0].weight, want, atol=1e-6)


def test_teacher_temperature_comes_from_the_loops_schedule():
    """Per epoch by default (DINO: `final` reached at epoch W-1), per iteration on request."""
    per_epoch = Schedules.build(_dino(warmup_teacher_temp_epochs=3), lr=1.0, min_lr=0.0, warmup_epochs=0,
                                weight_decay=0.0, weight_decay_end=0.0, epochs=4, steps_per_epoch=2)
    assert per_epoch.teacher_temp.tolist() == pytest.approx([0.04, 0.04, 0.055, 0.055, 0.07, 0.07, 0.07, 0.07])
    per_step = Schedules.build(_dino(warmup_teacher_temp_epochs=1, teacher_temp_per_iteration=True), lr=1.0,
                               min_lr=0.0, warmup_epochs=0, weight_decay=0.0, weight_decay_end=0.0, epochs=2,
                               steps_per_epoch=3)
    assert per_step.teacher_temp.tolist() == pytest.approx([0.04, 0.055, 0.07, 0.07, 0.07, 0.07])
    images, _ = pattern_images(2)
    assert run_step(_dino(), images, step_state(teacher_temp=0.061)).logs["teacher_temp"] == 0.061


def test_only_the_student_gets_gradients_and_teacher_sees_global_views():
    images, _ = pattern_images(4)
    method = _dino()
    seen = []
    method.teacher_backbone.register_forward_hook(lambda m, i, o: seen.append(i[0].shape))
    out = run_step(method, images)
    assert set(out.terms) == {"dino"}
    out.loss.backward()
    assert seen == [(24, 3, 8, 8)]                     # 2 global views x 12 images, no local crop
    assert all(p.grad is None for p in method.teacher_backbone.parameters())
    assert method.backbone.trunk.stages[0][0][0].weight.grad.abs().sum() > 0
    assert method.loss_fn.center.value.abs().sum() > 0      # center moved towards the teacher mean


def test_encoder_is_the_teacher_and_k_way_head_gives_cluster_logits():
    images, _ = pattern_images(2)
    method = _dino(out_dim="k").eval()
    encoder = method.encoder()
    assert encoder is method.teacher_backbone
    x = encoder.preprocess(torch.from_numpy(images))
    before = encoder(x).detach().clone()
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(0.5)
    assert torch.allclose(method.encoder()(x), before)
    head = method.cluster_head()
    assert head(encoder(x)).shape == (6, 3)
    with torch.no_grad():
        method.loss_fn.center.value.fill_(0.25)
        torch.testing.assert_close(head(encoder(x)), method.teacher_head(encoder(x)) - 0.25)
    assert _dino(out_dim=16).cluster_head() is None
    assert method.last_layer_parameters() and all(p.requires_grad for p in method.last_layer_parameters())


def test_vit_crops_are_aligned_to_the_patch_size():
    """32 px with patch 4: the default 14 px local crop becomes 16 px, so every crop is a
    whole patch grid (it used to fail with "ViT input 14x14 px is not a multiple of patch_size 4")."""
    vit = build_backbone("vit_tiny", img_size=32, depth=1)
    method = build_method("dino", vit, k=3, img_size=32, out_dim=8, hidden_dim=8, bottleneck_dim=4,
                          augment={"n_local": 2})
    assert vit.patch_size == 4 and method.views.local_size == 16 and method.views.global_size == 32
    images = np.random.default_rng(0).integers(0, 255, (2, 32, 32, 3)).astype(np.uint8)
    crops = method.collate({"images": torch.from_numpy(images), "index": torch.arange(2)}, step_state())["crops"]
    assert [c.shape[-1] for c in crops] == [32, 32, 16, 16]
    assert all(c.shape[-1] % vit.patch_size == 0 for c in crops)


def test_dino_trains_without_collapse(tmp_path):
    """At initialisation every image maps to nearly the same head output, so the DINO loss
    starts *low* (teacher and student agree on one dimension) and rises while the center
    spreads the outputs; a falling loss is not the signal here. The signals are: the
    teacher uses several output dimensions by the end, the teacher moved away from its
    initial copy, and the teacher's embeddings are not collapsed."""
    images, labels = pattern_images(24)
    torch.manual_seed(0)
    method = _dino(out_dim=32, hidden_dim=32, momentum_teacher=0.9, momentum_teacher_end=0.9)
    teacher_start = method.teacher_backbone.trunk.stages[0][0][0].weight.detach().clone()
    cfg = TrainConfig(method="dino", k=3, epochs=5, batch_size=8, lr=0.01, warmup_epochs=0,
                      device="cpu", knn_every=0, monitor_samples=72, num_workers=0)
    train(cfg, ArrayStore(images, labels), tmp_path / "run", method=method, progress=False)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5 and all(np.isfinite(float(r["loss"])) for r in rows)
    assert float(rows[-1]["loss_dino"]) == pytest.approx(float(rows[-1]["loss"]))
    assert float(rows[-1]["teacher_dims_used"]) > 1.5   # per batch of 8; 1 would be collapse
    assert not torch.allclose(method.teacher_backbone.trunk.stages[0][0][0].weight, teacher_start)
    emb = embed_images(method.encoder(), images)
    assert len(np.unique(kmeans(emb, 3, seed=0).labels)) == 3
    assert float(rows[-1]["emb_std"]) * np.sqrt(emb.shape[1]) > 0.05


def test_vit_dino_at_32px_trains_through_train(tmp_path):
    """Regression: `deepclust train --method dino --backbone vit_tiny --size 32` failed at the
    first step (14 px local crops for patch 4). Built from the config, as the command does."""
    torch.manual_seed(0)
    images = np.random.default_rng(1).integers(0, 255, (8, 32, 32, 3)).astype(np.uint8)
    cfg = TrainConfig(method="dino", backbone="vit_tiny", backbone_kwargs={"depth": 1}, k=3, epochs=1,
                      batch_size=4, device="cpu", knn_every=0, monitor_samples=8, num_workers=0,
                      collapse_check=False, method_kwargs={"out_dim": 8, "hidden_dim": 8, "bottleneck_dim": 4})
    train(cfg, ArrayStore(images, None), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and np.isfinite(float(rows[0]["loss"])) and int(rows[0]["step"]) == 2
