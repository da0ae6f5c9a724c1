"""k from the data: the silhouette recovers k on well-separated blobs; the curve is kept."""

import numpy as np
import pytest

from deepclust.cluster import InvalidInputError, choose_k, cluster_embeddings, parse_k_range


def _blobs(k, n=30, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.eye(k, d) * 12  # pairwise 17 apart, unit noise: well separated
    y = np.repeat(np.arange(k), n)
    return (centres[y] + rng.normal(size=(k * n, d))).astype(np.float32), y


@pytest.mark.parametrize("k", [3, 5])
def test_auto_k_recovers_k_on_separated_blobs(k):
    x, _ = _blobs(k)
    choice = choose_k(x, (2, 8))
    assert choice.k == k
    assert sorted(choice.curve) == list(range(2, 9))
    assert choice.curve[k] == max(choice.curve.values())
    info = choice.info()
    assert info["criterion"] == "silhouette" and info["k"] == k and set(info["curve"]) == {str(v) for v in range(2, 9)}


def test_cluster_embeddings_k_auto_with_pca_reduction():
    x, y = _blobs(4, d=20)
    c = cluster_embeddings(x, "auto", spherical=False, reduce="pca", reduce_dim=5, k_range="2:7", n_init=3)
    assert c.k == 4 and c.k_choice is not None and c.k_choice.k == 4
    assert c.reduction is not None and c.reduction.n_components == 5
    assert (c.predict(x) == c.labels).all()


def test_k_range_parsing_and_errors():
    assert parse_k_range("2:30") == (2, 30) and parse_k_range((3, 4)) == (3, 4) and parse_k_range(None) == (2, 30)
    for bad in ("30", "1:5", "9:3", "a:b"):
        with pytest.raises(InvalidInputError, match="k range"):
            parse_k_range(bad)
    with pytest.raises(InvalidInputError, match="needs at least"):
        choose_k(np.zeros((2, 3), np.float32), (2, 5))
    with pytest.raises(InvalidInputError, match="'auto'"):
        cluster_embeddings(np.zeros((5, 2)), "many")
