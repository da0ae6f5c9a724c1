"""Exact and near duplicates.

* **Exact**: images whose decoded pixels in the store are identical (a BLAKE2b hash of the
  ``uint8 (S, S, 3)`` array the store holds), so a byte-identical copy and a file re-saved
  losslessly (PNG -> BMP, other metadata) are both caught. The comparison is at the store's
  working size ``S``: two large images that differ only in detail lost by the downscale to
  ``S`` hash alike.
* **Near**: cosine similarity of the L2-normalised embeddings at or above ``threshold``
  (an absolute cosine similarity in (0, 1], not a rank or a distance), found on a faiss
  k-nearest-neighbour graph (`deepclust.curate.search`: exact below a size limit, IVF above);
  a group is a connected component of the graph (union-find), so a chain a~b~c is one
  group even when a and c are less similar than the threshold.

**Which member is kept**: the member whose path comes first in sorted (Python string)
order; every other member is removed as a duplicate of it. The rule is deterministic and
does not depend on the order of the files in the source.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from deepclust.curate.search import DEFAULT_EXACT_LIMIT, DEFAULT_NPROBE, build_index, search

#: Neighbours looked up per image for the near-duplicate graph.
DEFAULT_NEIGHBORS = 10


@dataclass
class DuplicateGroup:
    """One group: ``members`` (indices, the kept one first), ``kind`` exact|near, and each
    member's cosine similarity to the kept one (1.0 for exact groups)."""

    members: list[int]
    kind: str
    similarity: list[float]

    @property
    def kept(self) -> int:
        return self.members[0]


def content_hashes(images: np.ndarray, *, progress: bool = True) -> list[str]:
    """A hex digest of every decoded image (``(N, S, S, 3)`` uint8)."""
    out = []
    for i in tqdm(range(len(images)), desc="hash pixels", unit=" img", disable=not progress or len(images) < 5000):
        out.append(hashlib.blake2b(np.ascontiguousarray(images[i]).tobytes(), digest_size=16).hexdigest())
    return out


def _order_members(members: list[int], paths: list[str]) -> list[int]:
    """Kept member first: the first path in sorted order (ties: the lower index)."""
    return sorted(members, key=lambda i: (paths[i], i))


def exact_groups(images: np.ndarray, paths: list[str], *, progress: bool = True) -> list[DuplicateGroup]:
    """Groups of two or more images with identical pixels, ordered by their kept path."""
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, digest in enumerate(content_hashes(images, progress=progress)):
        by_hash[digest].append(i)
    groups = [DuplicateGroup(_order_members(m, paths), "exact", [1.0] * len(m))
              for m in by_hash.values() if len(m) > 1]
    return sorted(groups, key=lambda g: paths[g.kept])


class UnionFind:
    """Disjoint sets over ``0..n-1`` (path halving, union by size)."""

    def __init__(self, n: int):
        self.parent = np.arange(n, dtype=np.int64)
        self.size = np.ones(n, dtype=np.int64)

    def find(self, a: int) -> int:
        parent = self.parent
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = int(parent[a])
        return int(a)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        if self.size[ra] < self.size[rb]:
            ra, rb = rb, ra
        self.parent[rb] = ra
        self.size[ra] += self.size[rb]

    def components(self) -> list[list[int]]:
        """Sets with two or more members, each sorted."""
        by_root: dict[int, list[int]] = defaultdict(list)
        for i in range(len(self.parent)):
            by_root[self.find(i)].append(i)
        return [sorted(m) for m in by_root.values() if len(m) > 1]


def near_groups(x: np.ndarray, paths: list[str], threshold: float, *, candidates: np.ndarray | None = None,
                neighbors: int = DEFAULT_NEIGHBORS, exact_limit: int = DEFAULT_EXACT_LIMIT,
                nprobe: int = DEFAULT_NPROBE, progress: bool = True) -> tuple[list[DuplicateGroup], str]:
    """Connected components of the graph ``cos(x_i, x_j) >= threshold`` over ``candidates``.

    Args:
        x: ``(N, D)`` L2-normalised embeddings of every image.
        paths: ``(N,)`` paths (for the kept-member rule).
        candidates: indices taking part (default: all), e.g. one image per exact group.
        neighbors: neighbours looked up per image (the graph's out-degree before thresholding).

    Returns:
        (groups ordered by kept path, the index description).
    """
    cand = np.arange(len(x)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    if len(cand) < 2:
        return [], "none (fewer than 2 images)"
    sub = np.ascontiguousarray(x[cand], dtype=np.float32)
    index = build_index(sub, exact_limit=exact_limit, nprobe=nprobe)
    sims, ids = search(index, sub, neighbors + 1, progress=progress, desc="near-duplicate graph")
    uf = UnionFind(len(cand))
    rows, cols = np.nonzero((sims >= threshold) & (ids >= 0))
    for r, c in zip(rows.tolist(), cols.tolist()):
        j = int(ids[r, c])
        if j != r:
            uf.union(r, j)
    groups = []
    for comp in uf.components():
        members = _order_members([int(cand[i]) for i in comp], paths)
        kept = x[members[0]]
        similarity = [float(np.clip(x[m] @ kept, -1.0, 1.0)) for m in members]
        similarity[0] = 1.0
        groups.append(DuplicateGroup(members, "near", similarity))
    return sorted(groups, key=lambda g: paths[g.kept]), index.description


__all__ = ["DuplicateGroup", "content_hashes", "exact_groups", "near_groups", "UnionFind", "DEFAULT_NEIGHBORS"]
