"""PCA / UMAP reduction before clustering; UMAP without umap-learn fails with the install hint."""

import builtins

import numpy as np
import pytest

from deepclust.cluster import InvalidInputError, cluster_embeddings, reduce_features


def test_pca_reduction_is_a_centred_projection_and_caps_its_dimension():
    x = np.random.default_rng(0).normal(size=(40, 12)).astype(np.float32)
    z, red = reduce_features(x, "pca", n_components=4)
    assert z.shape == (40, 4) and red.info() == {"method": "pca", "n_components": 4}
    centred = x - x.mean(axis=0)
    _, s, _ = np.linalg.svd(centred, full_matrices=False)
    assert np.allclose(np.linalg.norm(z, axis=0), s[:4], rtol=1e-3)
    np.testing.assert_allclose(red.transform(x), z, atol=1e-4)
    assert reduce_features(x[:6], "pca")[1].n_components == 5  # min(50, D, N - 1)


def test_umap_without_umap_learn_gives_the_install_hint(monkeypatch):
    real_import = builtins.__import__

    def no_umap(name, *args, **kwargs):
        if name == "umap" or name.startswith("umap."):
            raise ImportError("No module named 'umap'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_umap)
    x = np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32)
    with pytest.raises(InvalidInputError, match=r"pip install 'deepclust\[umap\]'"):
        cluster_embeddings(x, 2, reduce="umap")


def test_the_cli_refuses_umap_before_decoding_anything(monkeypatch, tmp_path, capsys):
    import importlib.util

    from deepclust.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "umap" else real(name, *a))
    monkeypatch.setattr("deepclust.data.store.load_images", lambda *a, **k: pytest.fail("decoded before the check"))
    assert main(["cluster", "digits", "--k", "3", "--reduce", "umap", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'deepclust[umap]'" in capsys.readouterr().err


def test_bad_reduction_is_clear():
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(InvalidInputError, match="reduce must be one of"):
        reduce_features(x, "tsne")
    with pytest.raises(InvalidInputError, match="n_components"):
        reduce_features(x, "pca", n_components=0)


def test_spherical_pca_clusters_on_the_sphere_and_predicts_its_labels():
    rng = np.random.default_rng(1)
    directions = np.eye(3, 10)[np.repeat(np.arange(3), 20)] * 5
    x = (directions + rng.normal(scale=0.3, size=(60, 10))).astype(np.float32)
    c = cluster_embeddings(x, 3, spherical=True, reduce="pca", reduce_dim=3, n_init=3)
    assert c.space_spherical and np.allclose(np.linalg.norm(c.centroids, axis=1), 1, atol=1e-4)
    assert (c.predict(x) == c.labels).all() and sorted(c.sizes()) == [20, 20, 20]
