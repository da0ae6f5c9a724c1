"""Test-set decontamination: `contaminated` lists the images of SOURCE whose most similar
evaluation image has a cosine similarity at or above the near-duplicate threshold (same
encoder, same threshold as deduplication), as DINOv2 removed near duplicates of its
evaluation sets from LVD-142M. It takes L2-normalised embeddings and searches with
`deepclust.curate.search` (exact below a size limit, IVF above).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepclust.curate.search import DEFAULT_EXACT_LIMIT, DEFAULT_NPROBE, build_index, search


@dataclass
class Matches:
    """For each listed SOURCE index, the matching other-set index and their similarity."""

    source: np.ndarray  # (M,) int64 indices into SOURCE
    other: np.ndarray   # (M,) int64 indices into the evaluation / seed set
    similarity: np.ndarray  # (M,) float32
    index: str          # description of the faiss index used


def contaminated(source: np.ndarray, evaluation: np.ndarray, threshold: float, *,
                 candidates: np.ndarray | None = None, exact_limit: int = DEFAULT_EXACT_LIMIT,
                 nprobe: int = DEFAULT_NPROBE, progress: bool = True) -> Matches:
    """SOURCE images (of ``candidates``, default all) with an evaluation image at cosine >= threshold."""
    cand = np.arange(len(source)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    index = build_index(evaluation, exact_limit=exact_limit, nprobe=nprobe)
    if len(cand) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Matches(empty, empty, np.zeros(0, dtype=np.float32), index.description)
    sims, ids = search(index, source[cand], 1, progress=progress, desc="decontaminate")
    hit = (sims[:, 0] >= threshold) & (ids[:, 0] >= 0)
    return Matches(cand[hit], ids[hit, 0], sims[hit, 0], index.description)


__all__ = ["Matches", "contaminated"]
