"""Nearest-neighbour mining for SCAN / TEMI: the ``n`` most similar other rows of every row.

SCAN (Van Gansbeke et al., ECCV 2020, sec. 3.1) mines the 20 nearest neighbours of every image
in the pretext model's L2-normalised embedding space with faiss (inner product on unit
vectors, i.e. cosine similarity), exact search, all points. A row is never its own neighbour,
even when identical rows exist.
"""

from __future__ import annotations

import numpy as np

from deepclust.errors import DeepclustError

_CHUNK = 4096  # query rows per chunk in the numpy fallback (bounds memory)


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)


def _search(x: np.ndarray, n: int) -> np.ndarray:
    """``(N, n)`` indices of the largest inner products (self included), best first."""
    try:
        import faiss
    except ImportError:
        return _search_numpy(x, n)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    _, idx = index.search(x, n)
    return np.asarray(idx, dtype=np.int64)


def _search_numpy(x: np.ndarray, n: int) -> np.ndarray:
    out = np.empty((len(x), n), dtype=np.int64)
    for start in range(0, len(x), _CHUNK):
        sims = x[start:start + _CHUNK] @ x.T
        part = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        order = np.argsort(-np.take_along_axis(sims, part, axis=1), axis=1, kind="stable")
        out[start:start + _CHUNK] = np.take_along_axis(part, order, axis=1)
    return out


def mine_neighbours(x: np.ndarray, n_neighbours: int = 20, *, normalize: bool = True) -> np.ndarray:
    """The ``n_neighbours`` nearest other rows of each row of ``x`` ``(N, D)``, most similar first.

    Args:
        x: embeddings (float, finite).
        n_neighbours: neighbours per row, ``1 <= n_neighbours < N`` (SCAN: 20).
        normalize: L2-normalise rows first (cosine similarity, SCAN's choice); else inner product.

    Returns:
        ``(N, n_neighbours)`` int64; row ``i`` never contains ``i``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) < 2:
        raise DeepclustError(f"neighbour mining needs a (N, D) array with N >= 2, got shape {x.shape}.")
    if isinstance(n_neighbours, bool) or not isinstance(n_neighbours, (int, np.integer)) or n_neighbours < 1:
        raise DeepclustError(f"n_neighbours must be a positive integer, got {n_neighbours!r}.")
    n = min(int(n_neighbours), len(x) - 1)
    x = _unit_rows(x) if normalize else np.ascontiguousarray(x)
    idx = _search(x, n + 1)
    rows = np.arange(len(x))[:, None]
    is_self = idx == rows
    # Drop self where it was found, else the last (least similar) candidate: ties with identical rows.
    drop = np.where(is_self.any(axis=1), is_self.argmax(axis=1), n)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(len(x)), drop] = False
    return idx[keep].reshape(len(x), n)


def neighbour_purity(neighbours: np.ndarray, labels: np.ndarray | None) -> float | None:
    """Fraction of (row, neighbour) pairs whose known labels agree (SCAN's Table 1 / Fig. 3).

    Labels ``< 0`` are unknown and their pairs are ignored; None when no pair has two labels.
    """
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    anchor = np.broadcast_to(labels[:, None], neighbours.shape)
    other = labels[neighbours]
    known = (anchor >= 0) & (other >= 0)
    if not known.any():
        return None
    return float((anchor[known] == other[known]).mean())


__all__ = ["mine_neighbours", "neighbour_purity"]
