"""Retrieval-based curation around a curated seed set.

`retrieve` keeps the ``per_query`` nearest images of SOURCE to each seed image (cosine
similarity of L2-normalised embeddings; DINOv2's retrieval used N = 4): their union, each
image once. It is the set kept; the rest of SOURCE is "not retrieved".
"""

from __future__ import annotations

import numpy as np

from deepclust.curate.decontaminate import Matches
from deepclust.curate.search import DEFAULT_EXACT_LIMIT, DEFAULT_NPROBE, build_index, search


def retrieve(source: np.ndarray, seed: np.ndarray, per_query: int, *, candidates: np.ndarray | None = None,
             exact_limit: int = DEFAULT_EXACT_LIMIT, nprobe: int = DEFAULT_NPROBE,
             progress: bool = True) -> Matches:
    """The ``per_query`` nearest SOURCE images (of ``candidates``) to each seed image, each once.

    An image retrieved by several seeds is listed once, with the seed most similar to it.
    Returns the retrieved SOURCE indices in increasing order.
    """
    cand = np.arange(len(source)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(cand) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Matches(empty, empty, np.zeros(0, dtype=np.float32), "none (no candidates)")
    index = build_index(source[cand], exact_limit=exact_limit, nprobe=nprobe)
    sims, ids = search(index, seed, per_query, progress=progress, desc="retrieve")
    best: dict[int, tuple[float, int]] = {}
    for q in range(len(seed)):
        for s, i in zip(sims[q].tolist(), ids[q].tolist()):
            if i < 0:
                continue
            j = int(cand[i])
            if j not in best or s > best[j][0]:
                best[j] = (float(s), q)
    order = sorted(best)
    return Matches(np.asarray(order, dtype=np.int64), np.asarray([best[j][1] for j in order], dtype=np.int64),
                   np.asarray([best[j][0] for j in order], dtype=np.float32), index.description)


__all__ = ["retrieve"]
