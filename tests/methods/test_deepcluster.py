"""DeepCluster: PCA whitening, uniform sampling over clusters (vs the reference sampler),
identical points kept together, the epoch-start k-means and its logs, head
re-initialisation with fresh optimiser state, checkpoint state, and a short training run."""

import csv

import numpy as np
import pytest
import torch

from deepclust.methods import build_method
from deepclust.methods.common import MethodConfigError
from deepclust.methods.deepcluster import pca_whiten, uniform_cluster_indices
from deepclust.models.encoder import embed_images, embed_with_head
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from methods_helpers import GENTLE_VIEWS, ArrayStore, context, pattern_images, run_step, tiny_backbone

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


def _reference_unif_label_sampler(labels, k, n, rng):
    """DeepCluster's ``UnifLabelSampler.generate_indexes_epoch``, line by line (with a numpy
    Generator in place of the global RNG)."""
    images_lists = [[i for i in range(len(labels)) if labels[i] == c] for c in range(k)]
    nmb_non_empty_clusters = sum(1 for lst in images_lists if len(lst) != 0)
    size_per_pseudolabel = int(n / nmb_non_empty_clusters) + 1
    res = np.array([], dtype=np.int64)
    for lst in images_lists:
        if len(lst) == 0:
            continue
        indexes = rng.choice(np.asarray(lst), size_per_pseudolabel, replace=(len(lst) <= size_per_pseudolabel))
        res = np.concatenate((res, indexes))
    rng.shuffle(res)
    res = list(res.astype("int"))
    if len(res) >= n:
        return res[:n]
    res += res[: (n - len(res))]
    return res


@pytest.mark.parametrize("sizes", [(90, 8, 2, 0), (34, 33, 33, 0), (50, 50, 0, 0), (3, 2, 1, 0)])
def test_uniform_sampler_matches_the_reference_sampler(sizes):
    """int(N / n_nonempty) + 1 per non-empty cluster, with replacement when a cluster has at
    most that many members (a cluster of exactly 34 = int(100 / 3) + 1 is drawn with
    replacement), empty clusters skipped; the same draws as the reference."""
    labels = np.concatenate([np.full(s, c) for c, s in enumerate(sizes)]).astype(np.int64)
    n = len(labels)
    got = uniform_cluster_indices(labels, n, np.random.default_rng(0))
    want = _reference_unif_label_sampler(labels, len(sizes), n, np.random.default_rng(0))
    assert got.tolist() == [int(i) for i in want]
    counts = np.bincount(labels[got], minlength=len(sizes))
    nonempty = np.array(sizes) > 0
    assert counts[~nonempty].sum() == 0 and counts[nonempty].min() >= n // nonempty.sum() - 1, counts


def test_identical_points_stay_in_one_cluster_and_their_empty_clusters_are_skipped():
    """Three groups of identical feature vectors and 5 clusters: no group is split over
    labels (two clusters stay empty), and the sampler only draws from the used clusters."""
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, n_clusters=5, pca_dim=2)
    rng = np.random.default_rng(0)
    groups = rng.normal(size=(3, 3)).astype(np.float32) * 5
    features = np.repeat(groups, 10, axis=0)
    labels = method._cluster(features, seed=0)
    for g in range(3):
        assert len(np.unique(labels[g * 10:(g + 1) * 10])) == 1, labels
    assert len(np.unique(labels)) == 3
    method.set_pseudo_labels(labels)
    order = method.epoch_indices(context(np.zeros((30, 8, 8, 3), np.uint8)))
    assert set(np.unique(labels[order])) == set(np.unique(labels))


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
    assert {id(p) for p in ctx.reinitialized} == {id(p) for p in method.head.parameters()}
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
        run_step(method, images)


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
    ctx = context(images, labels, embed_all=lambda: embed_images(method.encoder(), images))
    method.on_epoch_start(ctx)
    optimizer = torch.optim.SGD(method.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for _ in range(15):
        loss = run_step(method, images).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[0] == pytest.approx(np.log(3), abs=0.05)
    assert np.mean(losses[-3:]) < 0.7 * losses[0]
    logits = embed_with_head(method.encoder(), images, head=method.cluster_head())[1]
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


def test_the_loop_rebuilds_the_classifiers_optimiser_state_each_epoch(tmp_path, monkeypatch):
    """DeepCluster builds a new optimiser for the top layer every epoch: after the epoch's
    k-means the re-initialised classifier has no momentum (or Adam moments) left, while the
    backbone keeps its own."""
    import deepclust.train.loop as loop

    seen = []
    original = loop.forget_optimizer_state

    def spy(optimizer, params):
        original(optimizer, params)
        head = [p for p in method.head.parameters()]
        seen.append((len(params), all(p not in optimizer.state for p in head),
                     any(p in optimizer.state for p in method.backbone.parameters())))

    monkeypatch.setattr(loop, "forget_optimizer_state", spy)
    images, labels = pattern_images(8)
    torch.manual_seed(0)
    method = build_method("deepcluster", tiny_backbone(), k=3, img_size=8, pca_dim=4, augment=GENTLE_VIEWS)
    cfg = TrainConfig(method="deepcluster", k=3, epochs=2, batch_size=8, lr=0.1, optimizer="sgd", warmup_epochs=0,
                      device="cpu", knn_every=0, monitor_samples=24, num_workers=0, collapse_check=False)
    train(cfg, ArrayStore(images, labels), tmp_path / "run", method=method, progress=False)
    # epoch 1: nothing to forget yet (no backbone state either); epoch 2: the head's state is gone
    assert seen == [(2, True, False), (2, True, True)]
