"""Cosine k-nearest-neighbour search with faiss: exact below a size limit, IVF above it.

Every curation step compares L2-normalised embeddings by inner product (= cosine
similarity). `build_index` picks the index from the number of vectors indexed:

* ``n <= exact_limit``: ``IndexFlatIP``, exact (every pair is compared);
* above: ``IndexIVFFlat`` (inner product) with ``nlist = 4 * sqrt(n)`` cells trained on a
  seeded sample of at most ``64 * nlist`` vectors, searched with ``nprobe`` cells; approximate
  (a true neighbour in a cell that is not probed is missed).

The index used is returned as a short description that the outputs report (``summary.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deepclust.errors import DeepclustError

#: Up to this many indexed vectors the search is exact (IndexFlatIP).
DEFAULT_EXACT_LIMIT = 100_000
#: IVF cells probed per query above the exact limit.
DEFAULT_NPROBE = 16
_QUERY_CHUNK = 4096


@dataclass
class Index:
    """A faiss index over ``n`` unit vectors and how it was built (``kind``: exact|ivf)."""

    index: Any
    n: int
    kind: str
    description: str
    quantizer: Any = None  # the IVF's coarse index, kept alive with it


def require_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - faiss is a dependency
        raise DeepclustError("curation needs faiss: pip install faiss-cpu") from exc
    return faiss


def build_index(x: np.ndarray, *, exact_limit: int = DEFAULT_EXACT_LIMIT, nprobe: int = DEFAULT_NPROBE,
                seed: int = 0) -> Index:
    """Index the rows of ``x`` (``(n, d)`` float32, already L2-normalised) for cosine search."""
    faiss = require_faiss()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if n <= exact_limit:
        index = faiss.IndexFlatIP(d)
        index.add(x)
        return Index(index, n, "exact", f"IndexFlatIP (exact, {n} vectors <= exact limit {exact_limit})")
    nlist = max(1, int(round(4 * math.sqrt(n))))
    quantizer = faiss.IndexFlatIP(d)
    ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    n_train = min(n, 64 * nlist)
    train = x[np.sort(rng.choice(n, n_train, replace=False))] if n_train < n else x
    ivf.train(train)
    ivf.add(x)
    ivf.nprobe = int(min(nprobe, nlist))
    return Index(ivf, n, "ivf", f"IndexIVFFlat (approximate, {n} vectors > exact limit {exact_limit}; "
                                f"nlist={nlist}, nprobe={ivf.nprobe})", quantizer)


def search(index: Index, queries: np.ndarray, k: int, *, progress: bool = True,
           desc: str = "k-NN search") -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar indexed vectors of each query: ``(sims (m, k), ids (m, k))``.

    Missing neighbours (IVF, fewer than k in the probed cells) have id -1 and similarity -inf.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = int(max(1, min(k, index.n)))
    sims = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    chunks = range(0, len(queries), _QUERY_CHUNK)
    for start in tqdm(chunks, desc=desc, unit=" chunk", disable=not progress or len(chunks) < 2):
        s, i = index.index.search(queries[start:start + _QUERY_CHUNK], k)
        sims[start:start + len(s)] = s
        ids[start:start + len(s)] = i
    sims[ids < 0] = -np.inf
    return sims, ids


__all__ = ["Index", "build_index", "search", "DEFAULT_EXACT_LIMIT", "DEFAULT_NPROBE"]
