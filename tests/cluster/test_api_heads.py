"""cluster_embeddings with HDBSCAN (noise label) and heads: one function, clear errors."""

import numpy as np
import pytest

from deepclust.cluster import NOISE, InvalidInputError, cluster_embeddings


def test_hdbscan_finds_dense_groups_and_labels_noise():
    rng = np.random.default_rng(0)
    dense = np.concatenate([rng.normal(loc=c, scale=0.2, size=(40, 2)) for c in ((0, 0), (8, 8), (0, 8))])
    outliers = np.array([[30.0, -30.0], [-25.0, 40.0], [50.0, 50.0]])
    x = np.concatenate([dense, outliers]).astype(np.float32)
    c = cluster_embeddings(x, None, clusterer="hdbscan", spherical=False, min_cluster_size=10)
    assert c.clusterer == "hdbscan" and c.k == 3
    assert (c.labels[-3:] == NOISE).all() and c.n_noise >= 3
    assert sum(c.sizes()) + c.n_noise == len(x)
    assert set(c.predict(x[:120])) == {0, 1, 2}  # predict never returns noise


def test_options_that_do_not_combine_fail_clearly():
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="k=None"):
        cluster_embeddings(x, 3, clusterer="hdbscan")
    with pytest.raises(InvalidInputError, match="clusterer must be"):
        cluster_embeddings(x, 3, clusterer="dbscan")
    with pytest.raises(InvalidInputError, match="head must be"):
        cluster_embeddings(x, 3, head="dino")
    with pytest.raises(InvalidInputError, match="balanced"):
        cluster_embeddings(x, 3, head="scan", balanced=True)
    with pytest.raises(InvalidInputError, match="all 30 points are noise"):
        cluster_embeddings(x, None, clusterer="hdbscan", min_cluster_size=29)


def test_default_call_is_still_plain_kmeans():
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    c = cluster_embeddings(x, 3)
    assert c.head is None and c.reduction is None and c.k_choice is None and c.clusterer == "kmeans"
    assert c.n_noise == 0 and (c.predict(x) == c.labels).all()


def test_head_clustering_predicts_with_the_head():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8)) * 6
    x = (centres[np.repeat(np.arange(3), 30)] + rng.normal(size=(90, 8))).astype(np.float32)
    c = cluster_embeddings(x, 3, spherical=False, head="temi",
                           head_options={"epochs": 40, "n_heads": 2, "batch_size": 32, "lr": 1e-2,
                                         "hidden_dim": 0, "teacher_momentum": 0.9})
    assert c.head is not None and c.head.config.kind == "temi" and c.k == 3
    assert (c.predict(x) == c.labels).all() and sorted(c.sizes()) == [30, 30, 30]
