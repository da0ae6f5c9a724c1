"""SwAV: prototype normalisation and freezing, the queue, cluster logits, a short run."""

import csv

import numpy as np
import torch

from deepclust.cluster import kmeans
from deepclust.methods import build_method
from deepclust.train.config import TrainConfig
from deepclust.train.embedding import embed_images
from deepclust.train.loop import train

from methods_helpers import GENTLE_VIEWS, ArrayStore, context, epoch_losses, pattern_images, tiny_backbone

torch.set_num_threads(1)
VIEWS = {**GENTLE_VIEWS, "n_local": 2, "local_size": 4, "local_scale": (0.3, 0.6), "local_blur_p": 0.0}


def _swav(**kw):
    kw = {"n_prototypes": 6, "hidden_dim": 16, "out_dim": 8, "augment": VIEWS, **kw}
    return build_method("swav", tiny_backbone(), k=3, img_size=8, **kw)


def test_prototypes_are_frozen_then_trained_and_always_unit_norm():
    images, _ = pattern_images(4)
    x, idx = torch.from_numpy(images), torch.arange(12)
    method = _swav(freeze_prototypes_niters=1)
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    method.training_step(x, idx, context(images, step=0))["loss"].backward()
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(6), atol=1e-5)
    assert method.prototypes.weight.grad.abs().sum() == 0
    assert method.projector.net[0].weight.grad.abs().sum() > 0
    method.zero_grad()
    method.training_step(x, idx, context(images, step=1))["loss"].backward()
    assert method.prototypes.weight.grad.abs().sum() > 0


def test_queue_fills_from_its_start_epoch_and_then_feeds_sinkhorn():
    images, _ = pattern_images(4)
    x, idx = torch.from_numpy(images), torch.arange(12)
    method = _swav(queue_length=24, epoch_queue_starts=1)
    method.training_step(x, idx, context(images, epoch=0))
    assert method.queue.abs().sum() == 0                     # not started yet
    method.training_step(x, idx, context(images, epoch=1))
    assert method.queue[:, :12].abs().sum() > 0 and method.queue[:, 12:].abs().sum() == 0
    assert method._queue_scores(context(images, epoch=1)) is None   # not full yet
    method.training_step(x, idx, context(images, epoch=1))
    scores = method._queue_scores(context(images, epoch=1))
    assert scores is not None and scores[0].shape == (24, 6)


def test_cluster_logits_only_with_k_prototypes():
    images, _ = pattern_images(2)
    x = _swav().preprocess(torch.from_numpy(images))
    assert _swav().cluster_logits(x) is None
    method = _swav(n_prototypes=3).eval()
    assert method.cluster_logits(x).shape == (6, 3)


def test_swav_trains_without_collapse(tmp_path):
    images, labels = pattern_images(16)
    torch.manual_seed(0)
    method = _swav(n_prototypes=6, freeze_prototypes_niters=3)
    cfg = TrainConfig(method="swav", k=3, epochs=5, batch_size=16, lr=0.02, warmup_epochs=0,
                      weight_decay=1e-6, device="cpu", knn_every=0, monitor_samples=48, num_workers=0)
    train(cfg, ArrayStore(images, labels), tmp_path / "run", method=method, progress=False)
    losses = epoch_losses(tmp_path / "run")
    assert losses[-1] < losses[0]
    with open(tmp_path / "run" / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["prototypes_used"]) > 1          # Sinkhorn keeps codes spread
    emb = embed_images(method, images)
    assert len(np.unique(kmeans(emb, 3, seed=0).labels)) == 3
