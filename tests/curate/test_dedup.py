"""Exact groups (pixel hashes), union-find, and near groups on the faiss k-NN graph."""

from __future__ import annotations

import numpy as np

from deepclust.cluster import l2_normalize
from deepclust.curate.dedup import UnionFind, exact_groups, near_groups


def test_exact_groups_hash_pixels_and_keep_the_first_sorted_path():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 4, 4, 3), dtype=np.uint8)
    images[4] = images[1]
    images[5] = images[1]
    images[3] = images[0]
    images[3, 0, 0, 0] ^= 1  # one bit off: not an exact duplicate
    paths = ["d.png", "z.png", "c.png", "a.png", "y.png", "b.png"]
    groups = exact_groups(images, paths, progress=False)
    assert [(g.kind, [paths[m] for m in g.members]) for g in groups] == [("exact", ["b.png", "y.png", "z.png"])]
    assert groups[0].similarity == [1.0, 1.0, 1.0]


def test_union_find_components_follow_chains():
    uf = UnionFind(7)
    for a, b in [(0, 1), (1, 2), (5, 6), (2, 0)]:
        uf.union(a, b)
    assert sorted(uf.components()) == [[0, 1, 2], [5, 6]]


def _chain_data():
    """Rows 0-1-2 a chain (cos(0,1), cos(1,2) ~0.98, cos(0,2) lower), 3-4 a pair, the rest far apart."""
    rng = np.random.default_rng(1)
    d = 64
    base = l2_normalize(rng.normal(size=(12, d)).astype(np.float32))
    x = base.copy()
    x[1] = base[0] + 0.2 * base[5]
    x[2] = base[0] + 0.4 * base[5]
    x[4] = base[3] + 0.1 * base[6]
    return l2_normalize(x)


def test_near_groups_are_connected_components_above_the_threshold():
    x = _chain_data()
    sims = x @ x.T
    assert sims[0, 2] < 0.95 <= min(sims[0, 1], sims[1, 2])
    paths = [f"img{i:02d}" for i in range(len(x))]
    paths[2] = "a_first"  # the kept member is the first sorted path, not the lowest index
    groups, index = near_groups(x, paths, 0.95, progress=False)
    assert [g.members for g in groups] == [[2, 0, 1], [3, 4]]
    assert index.startswith("IndexFlatIP (exact")
    assert np.allclose(groups[0].similarity, [1.0, sims[2, 0], sims[2, 1]], atol=1e-6)
    # candidates restrict the graph; the others never appear
    groups, _ = near_groups(x, paths, 0.95, candidates=np.array([0, 1, 3, 7]), progress=False)
    assert [g.members for g in groups] == [[0, 1]]


def test_ivf_above_the_exact_limit_finds_the_same_groups():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 16)).astype(np.float32)
    x[200:220] = x[:20] + 0.01 * rng.normal(size=(20, 16))
    x = l2_normalize(x)
    paths = [f"{i:04d}" for i in range(400)]
    exact, exact_index = near_groups(x, paths, 0.99, progress=False)
    ivf, ivf_index = near_groups(x, paths, 0.99, exact_limit=100, progress=False)
    assert exact_index.startswith("IndexFlatIP") and ivf_index.startswith("IndexIVFFlat")
    assert sorted(g.members for g in exact) == [[i, 200 + i] for i in range(20)]
    # IVF is approximate: every pair it finds is a true one, and with nprobe=16 of 80 cells it finds them all here
    assert sorted(g.members for g in ivf) == sorted(g.members for g in exact)
