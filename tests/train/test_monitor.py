"""The collapse watch: statistics of spread and collapsed embeddings, head vs k-means
sources, errors and warnings."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from deepclust.errors import CollapseError
from deepclust.train.monitor import check_collapse, collapse_stats


def test_collapse_stats_on_spread_and_collapsed_embeddings():
    rng = np.random.default_rng(0)
    spread = rng.normal(size=(200, 32))
    stats = collapse_stats(spread, k=4)
    assert stats.rel_std == pytest.approx(stats.emb_std * math.sqrt(32))
    assert 0.8 < stats.rel_std < 1.1 and stats.n_clusters_used == 4
    check_collapse(stats, epoch=0, k=4)  # healthy: no error

    constant = np.ones((200, 32)) + 1e-9 * rng.normal(size=(200, 32))
    with pytest.raises(CollapseError, match="stopped varying"):
        check_collapse(collapse_stats(constant, k=4), epoch=2, k=4)

    # a k-way head that sends everything to cluster 2: one cluster used, zero entropy
    logits = np.zeros((50, 4))
    logits[:, 2] = 20.0
    head = collapse_stats(spread[:50], logits, k=4)
    assert head.n_clusters_used == 1 and head.entropy == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(CollapseError, match="one cluster.*lower learning rate"):
        check_collapse(head, epoch=0, k=4)
    with pytest.warns(RuntimeWarning, match="collapsed"):
        check_collapse(head, epoch=0, k=4, raise_error=False)
    # an untrained head: the same argmax everywhere but near-uniform soft assignments -> not collapsed
    weak = np.zeros((50, 4))
    weak[:, 2] = 0.1
    with pytest.warns(RuntimeWarning, match="may be collapsing"):
        check_collapse(collapse_stats(spread[:50], weak, k=4), epoch=0, k=4)
    # uniform soft assignments: entropy log k
    uniform = collapse_stats(spread[:50], rng.normal(size=(50, 4)) * 1e-3, k=4)
    assert uniform.entropy == pytest.approx(math.log(4), abs=1e-4)


def test_collapse_warns_when_few_clusters_are_used():
    rng = np.random.default_rng(1)
    logits = np.zeros((40, 8))
    logits[np.arange(40), rng.integers(0, 2, 40)] = 5.0  # 2 of 8 clusters
    stats = collapse_stats(rng.normal(size=(40, 16)), logits, k=8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_collapse(stats, epoch=0, k=8)
    assert any("may be collapsing" in str(w.message) for w in caught)
