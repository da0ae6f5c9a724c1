"""One loaded model for every source of a curation: a PCA is fitted on SOURCE only."""

from __future__ import annotations

import numpy as np

from deepclust.cluster import l2_normalize
from deepclust.curate.api import _Embedder, _load
from deepclust.data.store import load_images
from deepclust.features import extract_features
from deepclust.models.encoder import embed_images


def _npz(path, seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8))
    return load_images(str(path), progress=False)


def test_other_sources_go_through_the_pca_fitted_on_source_and_its_mean(tmp_path):
    source, evaluation = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    # A cached PCA embedding of the evaluation store, fitted on that store itself: must not be used.
    own_fit = extract_features(evaluation, "pca", device="cpu", progress=False)
    loaded = _load(None, "pca", "cpu", source.size)
    embed = _Embedder(loaded, 16, False)
    x_source = embed(source)
    x_eval = embed(evaluation)
    raw_source = embed_images(loaded.encoder, source.images)
    raw_eval = embed_images(loaded.encoder, evaluation.images)  # the encoder is now fitted on SOURCE
    mean = raw_source.mean(axis=0, keepdims=True)
    assert np.allclose(x_source, l2_normalize(raw_source - mean), atol=1e-5)
    assert np.allclose(x_eval, l2_normalize(raw_eval - mean), atol=1e-5)
    assert not np.allclose(raw_eval, own_fit, atol=1e-3)
    assert np.allclose(np.linalg.norm(x_eval, axis=1), 1.0, atol=1e-5)


def test_a_cached_source_embedding_fits_the_pca_only_when_another_source_follows(tmp_path):
    source, evaluation = _npz(tmp_path / "a.npz", 0), _npz(tmp_path / "b.npz", 1)
    _Embedder(_load(None, "pca", "cpu", source.size), 16, False)(source)  # fills the embedding cache
    loaded = _load(None, "pca", "cpu", source.size)
    embed = _Embedder(loaded, 16, False)
    x_source = embed(source)
    assert not loaded.encoder.fitted  # a cache hit: nothing fitted for a dedup-only run
    x_eval = embed(evaluation)
    assert loaded.encoder.fitted
    raw_source = embed_images(loaded.encoder, source.images)
    mean = raw_source.mean(axis=0, keepdims=True)
    assert np.allclose(x_source, l2_normalize(raw_source - mean), atol=1e-5)
    assert np.allclose(x_eval, l2_normalize(embed_images(loaded.encoder, evaluation.images) - mean), atol=1e-5)
