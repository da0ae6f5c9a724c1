"""The number of clusters from the data: ``cluster_embeddings(x, "auto", k_range=(2, 30))``.

Criterion: the **silhouette score** (Rousseeuw 1987) of a k-means clustering for every k in
the range, computed in the space the clustering runs in (after whitening / L2 and after
``reduce``); the k with the highest score wins (ties: the smaller k). Label-free, and Lowe et
al. (2024, "An empirical study into clustering of unseen datasets with self-supervised
encoders") found the silhouette in a UMAP-reduced space tracks AMI closely, so
``reduce="umap"`` with ``k="auto"`` is their recipe; with no reduction the score is computed
on the (whitened / normalised) embeddings themselves. Cosine distance on spherical spaces.
On more than ``sample_size`` rows the score uses a seeded random sample (k-means uses all rows).

The whole curve is returned (`KChoice.curve`) and written to metrics.json and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deepclust.cluster.kmeans import kmeans
from deepclust.cluster.validation import InvalidInputError

DEFAULT_K_RANGE = (2, 30)
DEFAULT_SAMPLE_SIZE = 5000


@dataclass
class KChoice:
    """The chosen ``k``, the criterion, and its value for every k tried (``curve``)."""

    k: int
    criterion: str
    curve: dict[int, float] = field(default_factory=dict)
    k_range: tuple[int, int] = DEFAULT_K_RANGE

    def info(self) -> dict[str, Any]:
        return {"k": self.k, "criterion": self.criterion, "k_range": list(self.k_range),
                "curve": {str(k): round(v, 6) for k, v in self.curve.items()}}


def parse_k_range(value: str | Sequence[int] | None) -> tuple[int, int]:
    """``"2:30"`` or ``(2, 30)`` -> ``(2, 30)`` (inclusive); None -> the default."""
    if value is None:
        return DEFAULT_K_RANGE
    try:
        if isinstance(value, str):
            lo_s, hi_s = value.split(":")
            lo, hi = int(lo_s), int(hi_s)
        else:
            lo, hi = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"k range must look like 2:30 (smallest:largest k), got {value!r}.") from exc
    if lo < 2 or hi < lo:
        raise InvalidInputError(f"k range {lo}:{hi} must satisfy 2 <= smallest <= largest (e.g. 2:30).")
    return lo, hi


def silhouette(space: np.ndarray, labels: np.ndarray, *, spherical: bool, sample_size: int, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(labels)) < 2:
        return -1.0
    size = sample_size if len(space) > sample_size else None
    return float(silhouette_score(space, labels, metric="cosine" if spherical else "euclidean",
                                  sample_size=size, random_state=seed))


def choose_k(space: np.ndarray, k_range: str | Sequence[int] | None = None, *, spherical: bool = False,
             n_init: int = 10, seed: int = 0, sample_size: int = DEFAULT_SAMPLE_SIZE) -> KChoice:
    """k in ``k_range`` (inclusive, capped at ``N - 1``) with the best silhouette of a k-means.

    Args:
        space: ``(N, d)`` rows in the clustering space (unit rows when ``spherical``).
    """
    lo, hi = parse_k_range(k_range)
    hi = min(hi, len(space) - 1)
    if hi < lo:
        raise InvalidInputError(f"k range {lo}:{hi + 1} does not fit {len(space)} rows: "
                                f"--k auto needs at least {lo + 1} rows.")
    curve: dict[int, float] = {}
    # One k-means + silhouette per k: minutes on 10^4-10^5 rows, so a bar (stderr, only on a terminal).
    for k in tqdm(range(lo, hi + 1), desc="k auto (silhouette)", unit="k", leave=False, disable=None):
        result = kmeans(space, k, n_init=n_init, seed=seed, spherical=spherical)
        curve[k] = silhouette(space, np.asarray(result.labels), spherical=spherical, sample_size=sample_size,
                              seed=seed)
    best = max(curve, key=lambda k: (curve[k], -k))
    return KChoice(k=best, criterion="silhouette", curve=curve, k_range=(lo, hi))


__all__ = ["DEFAULT_K_RANGE", "KChoice", "choose_k", "parse_k_range", "silhouette"]
