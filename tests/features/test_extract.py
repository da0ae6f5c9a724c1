"""Feature extraction: raw/pca through the one loader, and the on-disk embedding cache."""


import numpy as np
import pytest
import sklearn.decomposition

from deepclust.data.store import ImageStore
from deepclust.errors import DeepclustError
from deepclust.features import extract_features
from deepclust.features.cache import cache_path


def make_store(n=40, size=6, source_id="test-source", seed=0) -> ImageStore:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageStore(images=images, paths=[f"arr#{i}" for i in range(n)], labels=None, class_names=None,
                      skipped=[], source_id=source_id)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private cache directory per test."""
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


class CountingPCA(sklearn.decomposition.PCA):
    fits = 0

    def fit(self, X, y=None):
        CountingPCA.fits += 1
        return super().fit(X, y)


def test_raw_is_flattened_pixels_in_unit_range():
    store = make_store()
    x = extract_features(store, "raw", batch_size=7)  # chunk size does not divide N
    assert x.shape == (40, 6 * 6 * 3) and x.dtype == np.float32
    np.testing.assert_allclose(x, store.images.reshape(40, -1) / 255.0, atol=1e-7)


def test_pca_is_whitened_and_has_the_requested_dimension():
    x = extract_features(make_store(), "pca", pca_dim=5, cache=False)
    assert x.shape == (40, 5) and x.dtype == np.float32
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(0, ddof=1), 1, atol=1e-3)  # whitening: unit variance


def test_pca_dim_larger_than_data_is_a_clear_error():
    with pytest.raises(DeepclustError, match="pca_dim must be an integer between 1 and"):
        extract_features(make_store(n=20), "pca", pca_dim=50)


def test_second_call_hits_the_cache(monkeypatch, isolated):
    monkeypatch.setattr(sklearn.decomposition, "PCA", CountingPCA)
    CountingPCA.fits = 0
    store = make_store()
    first = extract_features(store, "pca", pca_dim=8)
    second = extract_features(store, "pca", pca_dim=8)
    assert CountingPCA.fits == 1
    np.testing.assert_array_equal(first, second)
    # Defaults are part of the key: an explicit seed=0 is the same entry.
    extract_features(store, "pca", pca_dim=8, seed=0)
    assert CountingPCA.fits == 1
    # Changing pca_dim, the seed or the source changes the key.
    extract_features(store, "pca", pca_dim=4)
    extract_features(store, "pca", pca_dim=8, seed=1)
    extract_features(make_store(source_id="other"), "pca", pca_dim=8)
    assert CountingPCA.fits == 4
    assert len(list(isolated.glob("*.npy"))) == 4
    assert not list(isolated.glob("*.tmp"))  # atomic writes leave no temporary files


def test_cache_false_recomputes_and_writes_nothing(monkeypatch, isolated):
    monkeypatch.setattr(sklearn.decomposition, "PCA", CountingPCA)
    CountingPCA.fits = 0
    extract_features(make_store(), "pca", pca_dim=3, cache=False)
    extract_features(make_store(), "pca", pca_dim=3, cache=False)
    assert CountingPCA.fits == 2
    assert not isolated.exists() or not list(isolated.iterdir())


def test_cache_key_depends_on_options():
    assert cache_path("s", "pca", {"pca_dim": 50}) != cache_path("s", "pca", {"pca_dim": 20})
    assert cache_path("s", "pca", {"pca_dim": 50}) == cache_path("s", "pca", {"pca_dim": 50})
    assert cache_path("s", "raw", {}) != cache_path("t", "raw", {})


def test_corrupt_cache_file_is_recomputed():
    store = make_store()
    good = extract_features(store, "raw")
    (path,) = list(cache_path(store.source_id, "raw", {}).parent.glob("*.npy"))
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(extract_features(store, "raw"), good)
    np.testing.assert_array_equal(np.load(path), good)


def test_unknown_spec_lists_valid_kinds():
    with pytest.raises(DeepclustError, match="unknown model spec 'nope'.*valid kinds: raw, pca, hf:"):
        extract_features(make_store(), "nope")
    with pytest.raises(DeepclustError, match="pooling and resolution apply to Hugging Face models"):
        extract_features(make_store(), "raw", pooling="mean")


def test_a_pca_fitted_on_one_store_never_hits_another_stores_own_pca_in_the_cache():
    from deepclust.features import embed_store, load_model

    a, b = make_store(source_id="store-a", seed=1), make_store(source_id="store-b", seed=2)
    own_b = embed_store(load_model("pca", image_size=6, pca_dim=5), b, progress=False).features  # cached
    fitted_on_a = load_model("pca", image_size=6, pca_dim=5)
    via_a = embed_store(fitted_on_a, a, progress=False).features       # fits on A (cache miss), caches
    b_through_a = embed_store(fitted_on_a, b, progress=False)          # must not be B's own PCA
    assert fitted_on_a.encoder.fitted_on == "store-a"
    assert not b_through_a.cached and not np.allclose(b_through_a.features, own_b)
    x = b.images.reshape(len(b.images), -1).astype(np.float32) / 255.0
    pca = sklearn.decomposition.PCA(5, whiten=True, random_state=0).fit(
        a.images.reshape(len(a.images), -1).astype(np.float32) / 255.0)
    np.testing.assert_allclose(b_through_a.features, pca.transform(x), rtol=1e-3, atol=1e-3)
    again = embed_store(fitted_on_a, b, progress=False)                 # now cached under "fitted on A"
    assert again.cached and np.array_equal(again.features, b_through_a.features)
    assert via_a.shape == (40, 5)
