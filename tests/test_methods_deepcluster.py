"""DeepCluster: PCA whitening, uniform sampling over clusters, the epoch-start k-means and
its logs, head re-initialisation, checkpoint state, and a short training run."""

import csv

import numpy as np
import pytest
import torch

from deepclust.methods import build_method
from deepclust.methods.common import MethodConfigError
from deepclust.methods.deepcluster import pca_whiten, uniform_cluster_indices
from deepclust.train.config import TrainConfig
from deepclust.train.embedding import embed_images
from deepclust.train.loop import train

from methods_helpers import GENTLE_VIEWS, ArrayStore, context, pattern_images, tiny_backbone

torch.set_num_threads(1)


def test_pca_whiten_decorrelates_and_normalises():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6)) + 5.0
    out = pca_whiten(x, 4)
    assert out.shape == (200, 4)
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # Before the final row normalisation the axes are uncorrelated with unit variance:
    # check the same whitening with a huge eps-free projection through the covariance.
    xc = x - x.mean(0)
    w, v = np.linalg.eigh(np.cov(xc, rowvar=False))
    white = xc @ v[:, ::-1][:, :4] / np.sqrt(w[::-1][:4])
    assert np.allclose(np.cov(white, rowvar=False), np.eye(4), atol=1e-6)
    white /= np.linalg.norm(white, axis=1, keepdims=True)
    assert np.allclose(np.abs(np.sum(white * out, axis=1)), 1.0, atol=1e-4)


def test_uniform_sampler_gives_equal_cluster_counts():
    labels = np.array([0] * 90 + [1] * 8 + [2] * 2)
    idx = uniform_cluster_indices(labels, 100, np.random.default_rng(0))
    assert len(idx) == 100 and idx.min() >= 0 and idx.max() < 100
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.max() - counts.min() <= 1, counts   # 34/33/33 instead of 90/8/2


def _fake_embed_all(images, labels):
    """Features that separate the classes (what a trained backbone would give); centred
    one-hot rows span 2 dimensions, so PCA keeps 2 (a 3rd whitened axis would be pure noise)."""
    def embed_all():
        rng = np.random.default_rng(0)
        return (np.eye(3)[labels] * 5 + rng.normal(0, 0.1, (len(labels), 3))).astype(np.float32)
    return embed_all


def test_epoch_start_clusters_logs_and_resets_head():
    images, labels = pattern_images(10)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=2, augment=GENTLE_VIEWS)
    ctx = context(images, labels, embed_all=_fake_embed_all(images, labels))
    method.on_epoch_start(ctx)
    assert ctx.logs["nmi_vs_labels"] == pytest.approx(1.0)
    assert ctx.logs["kmeans_seconds"] >= 0 and "nmi_vs_prev" not in ctx.logs
    assert method.pseudo_labels.shape == (30,)
    w_first = method.head.linear.weight.detach().clone()
    assert w_first.std().item() == pytest.approx(0.01, rel=0.5)
    with torch.no_grad():
        method.head.linear.weight.add_(1.0)
    ctx.epoch = 1
    method.on_epoch_start(ctx)
    assert ctx.logs["nmi_vs_prev"] == pytest.approx(1.0)
    assert method.head.linear.weight.abs().max().item() < 0.1      # re-initialised
    assert not torch.equal(method.head.linear.weight, w_first)     # a fresh draw per epoch
    order = method.epoch_indices(ctx)
    assert np.bincount(method.pseudo_labels.numpy()[order]).min() >= 9


def test_pseudo_labels_survive_a_checkpoint_round_trip():
    images, labels = pattern_images(10)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=2)
    method.on_epoch_start(context(images, labels, embed_all=_fake_embed_all(images, labels)))
    restored = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=2)
    restored.load_state_extra(method.state_extra())
    assert torch.equal(restored.pseudo_labels, method.pseudo_labels)


def test_weighted_sampling_and_shuffle_use_no_custom_order():
    images, labels = pattern_images(4)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, sampling="weighted")
    assert method.epoch_indices(context(images, labels)) is None


def test_training_step_without_kmeans_says_what_is_missing():
    images, _ = pattern_images(2)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8)
    with pytest.raises(MethodConfigError, match="k-means"):
        method.training_step(torch.from_numpy(images), torch.arange(6), context(images))


def test_sobel_needs_a_two_channel_backbone():
    with pytest.raises(MethodConfigError, match="in_chans=2"):
        build_method("deepcluster", tiny_backbone(3), k=3, img_size=8, sobel=True)
    method = build_method("deepcluster", tiny_backbone(2), k=3, img_size=8, sobel=True)
    images, _ = pattern_images(2)
    assert method.preprocess(torch.from_numpy(images)).shape == (6, 2, 8, 8)


def test_deepcluster_fits_its_pseudo_labels():
    """Within an epoch the network learns the k-means pseudo-labels: the loss falls from
    about log(k) (fresh classifier) and the classifier uses more than one cluster."""
    images, labels = pattern_images(16)
    torch.manual_seed(0)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=4, augment=GENTLE_VIEWS)
    ctx = context(images, labels, embed_all=lambda: embed_images(method, images))
    method.on_epoch_start(ctx)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    x, idx = torch.from_numpy(images), torch.arange(len(images))
    losses = []
    for _ in range(15):
        loss = method.training_step(x, idx, ctx)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(3), abs=0.05)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    logits = embed_images(method, images, with_logits=True)[1]
    assert len(np.unique(logits.argmax(1))) > 1


def test_deepcluster_runs_in_the_training_loop(tmp_path):
    images, labels = pattern_images(16)
    torch.manual_seed(0)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=4, augment=GENTLE_VIEWS)
    cfg = TrainConfig(method="deepcluster", k=3, epochs=2, batch_size=8, lr=2.0, optimizer="sgd",
                      warmup_epochs=0, weight_decay=1e-5, device="cpu", knn_every=0, monitor_samples=48,
                      num_workers=0, collapse_check=False)  # 6 steps: the head is barely trained
    train(cfg, ArrayStore(images, labels), tmp_path / "run", method=method, progress=False)
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["nmi_vs_prev"]) > 0
    assert float(rows[0]["kmeans_seconds"]) >= 0 and float(rows[0]["nmi_vs_labels"]) > 0
    assert int(rows[1]["clusters_used"]) == 3
