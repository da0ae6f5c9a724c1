"""Whole-network SCAN: neighbours mined once (pixels or the encoder), anchor/neighbour views,
the lowest-running-loss head kept, the self-labelling epochs, and what training produces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deepclust.evaluate.metrics import cluster_acc
from deepclust.heads.losses import scan_loss, self_label_loss
from deepclust.heads.neighbours import mine_neighbours
from deepclust.methods import build_method
from deepclust.methods.common import MethodConfigError
from deepclust.methods.scan import pixel_vectors
from methods_helpers import GENTLE_VIEWS, context, pattern_images, step_state, tiny_backbone


def scan_method(**kw):
    return build_method("scan", tiny_backbone(), k=3, img_size=8,
                        **{"n_neighbours": 4, "n_heads": 3, "augment": GENTLE_VIEWS, **kw})


def test_pixel_vectors_are_exact_for_small_images_and_pca_projections_for_large_ones():
    small = np.random.default_rng(0).integers(0, 256, (10, 4, 4, 3)).astype(np.uint8)
    np.testing.assert_allclose(pixel_vectors(small), small.reshape(10, -1) / 255.0, rtol=1e-6)
    big = np.random.default_rng(1).integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)   # 192 > 16 dims
    z = pixel_vectors(big, max_dim=16)
    assert z.shape == (40, 16)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-5)   # centred projections
    # the projection keeps most of the variance of the top directions: no worse than 16 random ones
    total = ((big.reshape(40, -1) / 255.0 - (big.reshape(40, -1) / 255.0).mean(0)) ** 2).sum()
    assert (z ** 2).sum() > 0.3 * total


def test_neighbours_are_mined_once_in_pixel_space_and_kept_on_resume():
    images, labels = pattern_images(8)
    method = scan_method()
    method.on_train_start(context(images, labels))
    expected = mine_neighbours(pixel_vectors(images), 4)
    np.testing.assert_array_equal(method.neighbours, expected)
    table = method.state_extra()["neighbours"]
    resumed = scan_method()
    resumed.load_state_extra({"neighbours": table})
    resumed.on_train_start(context(images, labels))   # does not re-mine
    np.testing.assert_array_equal(resumed.neighbours, expected)


def test_neighbours_from_the_encoder_use_the_loops_embeddings():
    images, _ = pattern_images(6)
    space = np.random.default_rng(0).normal(size=(len(images), 5)).astype(np.float32)
    method = scan_method(neighbours_from="encoder")
    method.on_train_start(context(images, embed_all=lambda: space))
    np.testing.assert_array_equal(method.neighbours, mine_neighbours(space, 4))
    with pytest.raises(MethodConfigError, match="embed_all"):
        scan_method(neighbours_from="encoder").on_train_start(context(images))


def test_each_anchor_is_paired_with_one_of_its_mined_neighbours_deterministically():
    images, labels = pattern_images(8)
    method = scan_method(augment={**GENTLE_VIEWS, "global_scale": (1.0, 1.0)})
    method.on_train_start(context(images, labels))
    index = torch.tensor([0, 5, 17, 23])
    picked = method._neighbour_images(index, step=3)
    rows = [[images[j] for j in method.neighbours[i]] for i in index.tolist()]
    for got, candidates in zip(picked.numpy(), rows):
        assert any(np.array_equal(got, c) for c in candidates)
    assert torch.equal(picked, method._neighbour_images(index, step=3))   # same step, same pick (resume)


def test_step_is_the_sum_of_every_heads_scan_loss_and_the_kept_head_has_the_lowest_running_loss():
    torch.manual_seed(0)
    images, labels = pattern_images(8)
    method = scan_method(loss_momentum=0.0)
    method.on_train_start(context(images, labels))
    state = step_state(epoch=0, step=0, total_epochs=2)
    x = torch.from_numpy(images[:12])
    with torch.no_grad():
        batch = method.collate({"images": x, "index": torch.arange(12)}, state)
    assert set(batch) == {"anchor", "neighbour"}
    method.eval()   # BatchNorm in eval mode: the direct computation sees the same statistics
    out = method.training_step(batch, state)
    logits = method.heads(method.backbone(torch.cat([batch["anchor"], batch["neighbour"]])))
    per_head = scan_loss(logits[:, :12], logits[:, 12:], 5.0)[0]
    torch.testing.assert_close(out.terms["scan"], per_head.sum())
    assert method.kept_head() == int(per_head.argmin())
    head = method.cluster_head()
    emb = method.backbone(batch["anchor"])
    torch.testing.assert_close(head(emb), method.heads(emb)[method.kept_head()])


def test_last_epochs_self_label_the_kept_head():
    images, labels = pattern_images(8)
    method = scan_method(self_label_epochs=1, threshold=0.5).eval()
    method.on_train_start(context(images, labels))
    state = step_state(epoch=1, step=9, total_epochs=2)   # the last epoch
    x = torch.from_numpy(images[:12])
    with torch.no_grad():
        batch = method.collate({"images": x, "index": torch.arange(12)}, state)
    assert set(batch) == {"strong", "weak"}
    out = method.training_step(batch, state)
    best = method.kept_head()
    weak = method.heads(method.backbone(batch["weak"]))[best]
    strong = method.heads(method.backbone(batch["strong"]))[best]
    torch.testing.assert_close(out.terms["self_label"], self_label_loss(strong, weak.detach(), 0.5, True)[0])


def test_bad_settings_are_refused():
    for kw in (dict(n_heads=0), dict(threshold=1.0), dict(entropy_weight=-1.0), dict(augment={"n_local": 2})):
        with pytest.raises(MethodConfigError):
            scan_method(**kw)


def test_training_separates_easy_patterns_with_the_head(tmp_path):
    from deepclust.train.config import TrainConfig
    from deepclust.train.loop import train
    from methods_helpers import ArrayStore

    images, labels = pattern_images(16)
    cfg = TrainConfig(method="scan", backbone="small_cnn", backbone_kwargs={"widths": [8, 16], "convs_per_stage": 1},
                      method_kwargs={"n_neighbours": 5, "n_heads": 3, "augment": GENTLE_VIEWS}, k=3, image_size=8,
                      epochs=25, batch_size=16, lr=0.1, warmup_epochs=0, knn_every=0, monitor_samples=48,
                      num_workers=0, collapse_check=False, torch_threads=1, seed=0)
    from deepclust.train.builder import load_trained_method

    run = train(cfg, ArrayStore(images, labels), tmp_path / "run", progress=False)
    method, _ = load_trained_method(run)
    with torch.no_grad():
        pred = method.cluster_logits(method.preprocess(torch.from_numpy(images))).argmax(1).numpy()
    assert cluster_acc(labels, pred) >= 0.9
