"""`cluster_embeddings`, the one clustering function, against a direct composition of its parts."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from deepclust.cluster import Clustering, InvalidInputError, Whitener, cluster_embeddings, kmeans, l2_normalize
from deepclust.evaluate.metrics import cluster_acc


@pytest.fixture(autouse=True)
def one_faiss_thread():
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=120, n_features=6, centers=4, cluster_std=0.6, center_box=(-8, 8), random_state=1)
    return (x + 5).astype(np.float32), y


def test_whitened_clustering_is_whiten_then_l2_then_spherical_kmeans(blobs):
    x, _ = blobs
    got = cluster_embeddings(x, 4, whiten_dim=3, n_init=3, seed=5)
    whitener = Whitener.fit(x, 3)
    space = l2_normalize((x - whitener.mean) @ whitener.projection)
    direct = kmeans(space, 4, n_init=3, seed=5, spherical=True)
    np.testing.assert_array_equal(got.labels, direct.labels)
    np.testing.assert_allclose(got.centroids, direct.centroids, atol=1e-6)
    assert got.inertia == pytest.approx(direct.inertia)
    assert got.spherical and got.whiten_dim == 3 and got.whitener is not None
    np.testing.assert_allclose(got.whitener.projection, whitener.projection)


def test_spherical_and_euclidean_match_kmeans_on_the_same_space(blobs):
    x, y = blobs
    cosine = cluster_embeddings(x, 4, spherical=True, n_init=2, seed=1)
    direct = kmeans(l2_normalize(x), 4, n_init=2, seed=1, spherical=True)
    np.testing.assert_array_equal(cosine.labels, direct.labels)
    euclid = cluster_embeddings(x, 4, spherical=False, n_init=2, seed=1)
    np.testing.assert_array_equal(euclid.labels, kmeans(x, 4, n_init=2, seed=1).labels)
    assert not euclid.spherical and euclid.whitener is None and euclid.whiten_dim == 0
    assert cluster_acc(y, euclid.labels) == 1.0
    assert isinstance(euclid, Clustering) and sum(euclid.sizes()) == 120 and euclid.k == 4


@pytest.mark.parametrize("options", [dict(), dict(spherical=False), dict(whiten_dim=4)])
def test_predict_on_the_fitted_points_gives_the_labels(blobs, options):
    x, _ = blobs
    clustering = cluster_embeddings(x, 4, n_init=2, **options)
    np.testing.assert_array_equal(clustering.predict(x), clustering.labels)
    # New points near a fitted point go to its cluster.
    jitter = x[:10] + np.random.default_rng(0).normal(0, 1e-3, size=(10, 6)).astype(np.float32)
    np.testing.assert_array_equal(clustering.predict(jitter), clustering.labels[:10])


def test_balanced_assignment_evens_out_sizes():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 4)), rng.normal(6, 1, (12, 4)), rng.normal(-6, 1, (12, 4))])
    plain = cluster_embeddings(x.astype(np.float32), 3, spherical=False, n_init=2)
    balanced = cluster_embeddings(x.astype(np.float32), 3, spherical=False, n_init=2, balanced=True)
    assert max(plain.sizes()) - min(plain.sizes()) > 30
    assert max(balanced.sizes()) - min(balanced.sizes()) <= 4 and balanced.balanced
    np.testing.assert_array_equal(balanced.centroids, plain.centroids)  # same k-means, other assignment


def test_bad_input_is_rejected(blobs):
    x, _ = blobs
    with pytest.raises(InvalidInputError, match="whiten_dim"):
        cluster_embeddings(x, 3, whiten_dim=-1)
    with pytest.raises(InvalidInputError, match="only 120 samples"):
        cluster_embeddings(x, 121)
    clustering = cluster_embeddings(x, 3, n_init=1)
    with pytest.raises(InvalidInputError, match="fitted on 6"):
        clustering.predict(x[:, :5])
