"""Feature extraction: raw/pca, the kind registry and the on-disk cache."""


import numpy as np
import pytest
import sklearn.decomposition

import deepclust.features as features
from deepclust.data.store import ImageStore
from deepclust.errors import DeepclustError
from deepclust.features import extract_features, feature_kinds, register_feature_kind
from deepclust.features.cache import cache_path


def make_store(n=40, size=6, source_id="test-source", seed=0) -> ImageStore:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageStore(images=images, paths=[f"arr#{i}" for i in range(n)], labels=None, class_names=None,
                      skipped=[], source_id=source_id)


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Private cache directory and registry per test."""
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(features, "_KINDS", list(features._KINDS))
    return tmp_path / "cache" / "features"


class CountingPCA(sklearn.decomposition.PCA):
    fits = 0

    def fit_transform(self, X, y=None):
        CountingPCA.fits += 1
        return super().fit_transform(X, y)


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
    # Defaults are part of the key: explicit whiten=True/seed=0 is the same entry.
    extract_features(store, "pca", pca_dim=8, whiten=True, seed=0)
    assert CountingPCA.fits == 1
    # Changing pca_dim, whitening or the source changes the key.
    extract_features(store, "pca", pca_dim=4)
    extract_features(store, "pca", pca_dim=8, whiten=False)
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
    path = cache_path(store.source_id, "raw", {})
    path.write_bytes(b"not a numpy file")
    np.testing.assert_array_equal(extract_features(store, "raw"), good)
    np.testing.assert_array_equal(np.load(path), good)


def test_registered_kind_gets_caching_and_option_checks():
    calls = []

    def toy_extractor(store, spec, *, device="cpu", batch_size=256, scale: float = 1.0):
        calls.append(spec)
        return store.images.reshape(len(store.images), -1)[:, :4].astype(np.float64) * scale

    register_feature_kind(lambda spec: spec.startswith("toy:"), toy_extractor, name="toy:<anything>")
    assert "toy:<anything>" in feature_kinds()
    store = make_store()
    x = extract_features(store, "toy:a", scale=2.0)
    assert x.dtype == np.float32 and x.shape == (40, 4)
    extract_features(store, "toy:a", scale=2.0)
    extract_features(store, "toy:b", scale=2.0)
    assert calls == ["toy:a", "toy:b"]
    with pytest.raises(DeepclustError, match="does not take option.*colour.*accepts: scale"):
        extract_features(store, "toy:a", colour=1)


def test_malformed_extractor_output_is_rejected():
    register_feature_kind(lambda s: s == "bad", lambda store, spec, **kw: np.full((3, 2), np.nan), name="bad")
    with pytest.raises(DeepclustError, match=r"returned shape \(3, 2\) for 40 images"):
        extract_features(make_store(), "bad")


def test_unknown_spec_lists_valid_kinds_including_lazily_imported_ones(monkeypatch):
    # The real providers (trained runs, hf:) register on import; a missing package is skipped.
    monkeypatch.setattr(features, "_PROVIDER_PACKAGES", features._PROVIDER_PACKAGES + ("deepclust_no_such_provider",))
    with pytest.raises(DeepclustError, match="unknown feature spec 'nope'; valid kinds: raw, pca, .*hf:"):
        extract_features(make_store(), "nope")


def test_progress_reaches_extractors_that_take_it_and_is_not_part_of_the_key():
    seen = []

    def with_progress(store, spec, *, device="cpu", batch_size=256, progress=True):
        seen.append(progress)
        return np.zeros((len(store.images), 2))

    register_feature_kind(lambda s: s == "p", with_progress, name="p")
    extract_features(make_store(), "p", progress=False)
    extract_features(make_store(), "p", progress=True)  # cache hit: same key
    assert seen == [False]
    extract_features(make_store(), "raw", progress=False)  # raw takes no progress: not passed


def test_provider_package_is_imported_when_no_kind_matches(tmp_path, monkeypatch):
    (tmp_path / "toy_feature_provider.py").write_text(
        "import numpy as np\n"
        "from deepclust.features import register_feature_kind\n"
        "def ones(store, spec, *, device='cpu', batch_size=256):\n"
        "    return np.ones((len(store.images), 3))\n"
        "register_feature_kind(lambda s: s.startswith('ones:'), ones, name='ones:<x>')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(features, "_PROVIDER_PACKAGES", ("toy_feature_provider",))
    np.testing.assert_array_equal(extract_features(make_store(), "ones:x"), np.ones((40, 3), np.float32))
