"""The neighbour miner against brute force; label purity."""

import numpy as np
import pytest

from deepclust.errors import DeepclustError
from deepclust.heads.neighbours import mine_neighbours, neighbour_purity


def test_neighbours_match_brute_force_cosine():
    x = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    got = mine_neighbours(x, 5)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    assert got.shape == (60, 5) and got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_no_row_is_its_own_neighbour_even_with_duplicates():
    x = np.repeat(np.eye(3, dtype=np.float32), 4, axis=0)  # 3 groups of 4 identical rows
    got = mine_neighbours(x, 3)
    assert not (got == np.arange(12)[:, None]).any()
    assert (got // 4 == np.arange(12)[:, None] // 4).all()  # the 3 copies are the neighbours
    assert neighbour_purity(got, np.arange(12) // 4) == 1.0


def test_purity_ignores_unknown_labels_and_bad_input_is_clear():
    nb = np.array([[1, 2], [0, 2], [0, 1]])
    assert neighbour_purity(nb, np.array([0, 0, 1])) == pytest.approx(2 / 6)
    assert neighbour_purity(nb, np.array([0, 0, -1])) == 1.0  # only the (0, 1) pairs count
    assert neighbour_purity(nb, None) is None
    with pytest.raises(DeepclustError, match="N >= 2"):
        mine_neighbours(np.zeros((1, 3)), 2)
    assert mine_neighbours(np.eye(3), 20).shape == (3, 2)  # capped at N - 1


def test_numpy_fallback_equals_faiss():
    from deepclust.heads.neighbours import _search, _search_numpy, _unit_rows

    x = _unit_rows(np.random.default_rng(1).normal(size=(50, 6)))
    np.testing.assert_array_equal(_search_numpy(x, 4), _search(x, 4))
