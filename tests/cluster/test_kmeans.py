"""k-means: blobs recovered, backends agree, spherical mode, validation, no empty clusters."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from deepclust.cluster import InvalidInputError, KMeansResult, assign_to_centroids, kmeans
from deepclust.errors import DeepclustError
from deepclust.evaluate.metrics import cluster_acc, many_to_one_acc


@pytest.fixture(autouse=True)
def one_faiss_thread():
    # Tiny problems: faiss's OpenMP threads spin-wait for each other on a busy 2-core
    # machine and become far slower than one thread.
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


@pytest.fixture(scope="module")
def blobs():
    x, y = make_blobs(n_samples=600, n_features=8, centers=5, cluster_std=0.5, center_box=(-20, 20), random_state=0)
    return x.astype(np.float32), y


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_recovers_well_separated_blobs(blobs, backend):
    x, y = blobs
    result = kmeans(x, 5, n_init=3, backend=backend)
    assert isinstance(result, KMeansResult)
    assert result.labels.dtype == np.int64 and result.labels.shape == (600,)
    assert result.centroids.dtype == np.float32 and result.centroids.shape == (5, 8)
    assert cluster_acc(y, result.labels) == 1.0
    assert result.n_empty_repaired == 0
    # Labels are the nearest centroid and inertia is their summed squared distance.
    d2 = ((x[:, None, :] - result.centroids[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(result.labels, d2.argmin(1))
    assert result.inertia == pytest.approx(d2.min(1).sum(), rel=1e-4)


def test_backends_agree_on_blobs(blobs):
    x, _ = blobs
    a = kmeans(x, 5, n_init=3, backend="faiss")
    b = kmeans(x, 5, n_init=3, backend="sklearn")
    assert cluster_acc(a.labels, b.labels) == 1.0
    assert a.inertia == pytest.approx(b.inertia, rel=1e-4)


def test_same_seed_same_result_and_float64_input(blobs):
    x, _ = blobs
    a = kmeans(x.astype(np.float64), 7, n_init=1, seed=3)
    b = kmeans(x, 7, n_init=1, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)


@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_spherical_normalises_rows_and_centroids(blobs, backend):
    x, _ = blobs
    rng = np.random.default_rng(0)
    scaled = x * rng.uniform(0.1, 10.0, size=(len(x), 1)).astype(np.float32)
    a = kmeans(x, 5, n_init=2, spherical=True, backend=backend)
    b = kmeans(scaled, 5, n_init=2, spherical=True, backend=backend)
    # Row scale is irrelevant once rows are normalised.
    assert cluster_acc(a.labels, b.labels) == 1.0
    np.testing.assert_allclose(np.linalg.norm(a.centroids, axis=1), 1.0, atol=1e-5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_array_equal(a.labels, (unit @ a.centroids.T).argmax(1))
    # Euclidean k-means on the scaled rows does depend on the scale.
    assert cluster_acc(a.labels, kmeans(scaled, 5, n_init=2, backend=backend).labels) < 1.0


def test_over_clustering_uses_every_cluster(blobs):
    x, y = blobs
    result = kmeans(x, 40, n_init=1)
    assert np.bincount(result.labels, minlength=40).min() >= 1
    assert many_to_one_acc(y, result.labels) == 1.0  # each small cluster stays inside one blob


def test_n_equals_k_and_k_one():
    x = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    assert sorted(kmeans(x, 6, n_init=1).labels.tolist()) == list(range(6))
    one = kmeans(x, 1, n_init=1)
    assert (one.labels == 0).all()
    np.testing.assert_allclose(one.centroids[0], x.mean(0), atol=1e-5)


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")  # scikit-learn's own notice; expected here
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_identical_points_stay_in_one_cluster(backend):
    x = np.zeros((12, 4), dtype=np.float32)
    x[6:] = 1.0  # only two distinct points, four clusters requested
    result = kmeans(x, 4, n_init=1, backend=backend)
    # DeepCluster's repair never splits identical vectors: two clusters used, two left empty.
    assert len(set(result.labels[:6])) == 1 and len(set(result.labels[6:])) == 1
    assert result.labels[0] != result.labels[6]
    assert (np.bincount(result.labels, minlength=4) == 0).sum() == 2


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")
@pytest.mark.parametrize("backend", ["faiss", "sklearn"])
def test_enough_distinct_points_leave_no_empty_cluster(backend):
    x = np.repeat(np.array([[0, 0], [0.01, 0], [5, 5], [9, 0]], np.float32), 3, axis=0)
    result = kmeans(x, 4, n_init=1, backend=backend)
    assert np.bincount(result.labels, minlength=4).tolist() == [3, 3, 3, 3]


@pytest.mark.parametrize(
    "x, k, message",
    [
        (np.zeros(10), 2, "2-D"),
        (np.array([[0.0, 1.0], [np.nan, 2.0], [1.0, 1.0]]), 2, "NaN"),
        (np.ones((5, 2)), 0, "at least 1"),
        (np.ones((5, 2)), 6, "only 5 samples"),
        (np.ones((5, 2)), 2.5, "integer"),
        (np.ones((0, 2)), 1, "at least 1 row"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(x, k, message):
    with pytest.raises(InvalidInputError, match=message) as info:
        kmeans(x, k)
    assert isinstance(info.value, DeepclustError) and isinstance(info.value, ValueError)


def test_bad_options_are_rejected():
    x = np.ones((5, 2), dtype=np.float32)
    with pytest.raises(InvalidInputError, match="backend"):
        kmeans(x, 2, backend="cuml")
    with pytest.raises(InvalidInputError, match="n_init"):
        kmeans(x, 2, n_init=0)


def test_assign_to_centroids_matches_brute_force():
    rng = np.random.default_rng(1)
    x, c = rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(7, 6)).astype(np.float32)
    d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
    np.testing.assert_array_equal(assign_to_centroids(x, c), d2.argmin(1))
    np.testing.assert_array_equal(assign_to_centroids(x, c, spherical=True), (x @ c.T).argmax(1))
