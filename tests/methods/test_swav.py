"""SwAV: prototype normalisation and freezing (by the loop, per iteration), the queue,
the k-way head, a short run."""

import csv

import numpy as np
import torch

from deepclust.cluster import kmeans
from deepclust.methods import build_method
from deepclust.models.encoder import embed_images
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from deepclust.train.step import Schedules, optimizer_step
from methods_helpers import GENTLE_VIEWS, ArrayStore, epoch_losses, pattern_images, run_step, step_state, tiny_backbone

torch.set_num_threads(1)
VIEWS = {**GENTLE_VIEWS, "n_local": 2, "local_size": 4, "local_scale": (0.3, 0.6), "local_blur_p": 0.0}


def _swav(**kw):
    kw = {"n_prototypes": 6, "hidden_dim": 16, "out_dim": 8, "augment": VIEWS, **kw}
    return build_method("swav", tiny_backbone(), k=3, img_size=8, **kw)


def test_prototypes_are_frozen_then_trained_and_always_unit_norm():
    """The loop cancels the prototypes' gradients (grad = None, as SwAV's reference code) for
    the first freeze_prototypes_niters steps; the projector trains meanwhile."""
    images, _ = pattern_images(4)
    method = _swav(freeze_prototypes_niters=1)
    schedules = Schedules.build(method, lr=0.1, min_lr=0.1, warmup_epochs=0, weight_decay=0.0,
                                weight_decay_end=0.0, epochs=1, steps_per_epoch=3)
    assert [schedules.state(0, s).freeze_last_layer for s in range(3)] == [True, False, False]
    with torch.no_grad():
        method.prototypes.weight.mul_(3.0)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    state = schedules.state(0, 0)
    out = run_step(method, images, state)
    assert torch.allclose(method.prototypes.weight.norm(dim=1), torch.ones(6), atol=1e-5)
    protos, proj = method.prototypes.weight.detach().clone(), method.projector.net[0].weight.detach().clone()
    optimizer_step(method, opt, None, out.loss, state, clip_grad=0.0, params=[])
    assert method.prototypes.weight.grad is None and torch.equal(method.prototypes.weight, protos)
    assert not torch.equal(method.projector.net[0].weight, proj)
    state = schedules.state(0, 1)
    optimizer_step(method, opt, None, run_step(method, images, state).loss, state, clip_grad=0.0, params=[])
    assert method.prototypes.weight.grad.abs().sum() > 0


def test_queue_fills_from_its_start_epoch_and_then_feeds_sinkhorn():
    images, _ = pattern_images(4)
    method = _swav(queue_length=24, epoch_queue_starts=1)
    run_step(method, images, step_state(epoch=0))
    assert method.queue.abs().sum() == 0                     # not started yet
    run_step(method, images, step_state(epoch=1))
    assert method.queue[:, :12].abs().sum() > 0 and method.queue[:, 12:].abs().sum() == 0
    assert method._queue_scores(1) is None   # not full yet
    run_step(method, images, step_state(epoch=1))
    scores = method._queue_scores(1)
    assert scores is not None and scores[0].shape == (24, 6)


def test_cluster_head_only_with_k_prototypes():
    images, _ = pattern_images(2)
    assert _swav().cluster_head() is None
    method = _swav(n_prototypes=3).eval()
    encoder = method.encoder()
    z = encoder(encoder.preprocess(torch.from_numpy(images)))
    scores = method.cluster_head()(z)
    assert scores.shape == (6, 3) and scores.abs().max() <= 1 + 1e-5   # cosine scores


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
    emb = embed_images(method.encoder(), images)
    assert len(np.unique(kmeans(emb, 3, seed=0).labels)) == 3
