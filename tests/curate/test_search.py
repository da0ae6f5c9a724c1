"""The faiss search helper: exact results equal a brute-force top-k."""

from __future__ import annotations

import numpy as np

from deepclust.cluster import l2_normalize
from deepclust.curate.search import build_index, search


def test_exact_search_equals_brute_force_and_ivf_says_so():
    rng = np.random.default_rng(0)
    base = l2_normalize(rng.normal(size=(50, 8)).astype(np.float32))
    queries = l2_normalize(rng.normal(size=(7, 8)).astype(np.float32))
    index = build_index(base)
    sims, ids = search(index, queries, 3, progress=False)
    brute = queries @ base.T
    assert (ids == np.argsort(-brute, axis=1)[:, :3]).all()
    assert np.allclose(sims, np.take_along_axis(brute, ids, axis=1), atol=1e-5)
    assert index.kind == "exact"
    ivf = build_index(base, exact_limit=10, nprobe=4)
    assert ivf.kind == "ivf" and "nprobe=4" in ivf.description
    _, ids_ivf = search(ivf, base[:5], 1, progress=False)
    assert ids_ivf[:, 0].tolist() == [0, 1, 2, 3, 4]  # every vector finds itself in its own cell
