"""Recall@k both ways against a direct per-query computation."""

from __future__ import annotations

import numpy as np
import pytest

from deepclust.evaluate.retrieval import recall_at_k


def _direct(queries, gallery, qkeys, gkeys, k):
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    hits = 0
    for i in range(len(q)):
        order = np.argsort(-(g @ q[i]), kind="stable")[:k]
        hits += any(gkeys[j] == qkeys[i] for j in order)
    return hits / len(q)


def test_recall_matches_a_per_query_ranking_for_captions_and_for_classes():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(30, 8))
    texts = images[np.repeat(np.arange(30), 2)] + rng.normal(scale=1.5, size=(60, 8))  # 2 noisy captions each
    for image_keys, text_keys in ((np.arange(30), np.repeat(np.arange(30), 2)),                 # instances
                                  (np.arange(30) % 3, np.repeat(np.arange(30), 2) % 3)):        # classes
        got = recall_at_k(images, texts, image_keys, text_keys, ks=(1, 5), block=7)
        for k in (1, 5):
            assert got[f"i2t_r{k}"] == pytest.approx(_direct(images, texts, image_keys, text_keys, k))
            assert got[f"t2i_r{k}"] == pytest.approx(_direct(texts, images, text_keys, image_keys, k))
    perfect = recall_at_k(images, images, np.arange(30), np.arange(30))
    assert perfect == {"i2t_r1": 1.0, "i2t_r5": 1.0, "t2i_r1": 1.0, "t2i_r5": 1.0}


def test_recall_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        recall_at_k(np.ones((3, 4)), np.ones((3, 5)), [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError):
        recall_at_k(np.ones((3, 4)), np.ones((3, 4)), [0, 1], [0, 1, 2])
