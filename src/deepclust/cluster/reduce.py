"""Dimensionality reduction before clustering: PCA or UMAP (``cluster_embeddings(reduce=...)``).

- ``pca``: scikit-learn's PCA (centred, not whitened) to ``n_components`` (default 50, capped at
  ``min(D, N - 1)``); cheap, deterministic, linear.
- ``umap``: UMAP (McInnes et al. 2018; umap-learn, the optional extra ``deepclust[umap]``) to
  ``n_components`` (default 10) with ``min_dist=0`` (tight clumps, the setting for clustering)
  and ``n_neighbors=15``; UMAP then k-means / GMM is the N2D recipe (McConville et al. 2020),
  and the silhouette score in a UMAP space tracks AMI well (Lowe et al. 2024). Seeded, so
  single-threaded (umap-learn's rule for reproducible results).

The returned `Reduction` applies the same map to new rows (`Clustering.predict`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from deepclust.cluster.validation import InvalidInputError, check_features

REDUCERS = ("pca", "umap")
DEFAULT_COMPONENTS = {"pca": 50, "umap": 10}
UMAP_HINT = ("--reduce umap needs umap-learn, an optional extra: pip install 'deepclust[umap]' "
             "(or pip install umap-learn); --reduce pca needs nothing more.")


@dataclass
class Reduction:
    """A fitted reduction: ``method``, output dimension and the fitted model."""

    method: str
    n_components: int
    model: Any

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Rows of ``x`` ``(N, D)`` in the reduced space ``(N, n_components)`` float32."""
        return np.ascontiguousarray(self.model.transform(check_features(x, "x")), dtype=np.float32)

    def info(self) -> dict[str, Any]:
        return {"method": self.method, "n_components": self.n_components}


def require_umap() -> None:
    """Raise `InvalidInputError` with the install hint when umap-learn is missing (checked
    before minutes of decoding and embedding, not after)."""
    import importlib.util

    if importlib.util.find_spec("umap") is None:
        raise InvalidInputError(UMAP_HINT)


def _umap(seed: int, n_components: int, n_neighbors: int, metric: str) -> Any:
    try:
        import umap
    except ImportError as exc:
        raise InvalidInputError(UMAP_HINT) from exc
    return umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, min_dist=0.0, metric=metric,
                     random_state=seed, n_jobs=1)


def reduce_features(x: np.ndarray, method: str, *, n_components: int | None = None, seed: int = 0,
                    n_neighbors: int = 15, spherical: bool = False) -> tuple[np.ndarray, Reduction]:
    """Fit ``method`` (``pca`` or ``umap``) on ``x`` ``(N, D)``; returns ``(reduced, Reduction)``.

    Args:
        n_components: output dimension (default 50 for PCA, 10 for UMAP), capped at
            ``min(D, N - 1)`` for PCA and ``N - 2`` for UMAP.
        seed: random state. n_neighbors: UMAP's neighbourhood size.
        spherical: the rows are directions (cosine metric for UMAP; PCA is unaffected).

    Raises:
        InvalidInputError: unknown method, bad dimension, or UMAP without umap-learn (with the hint).
    """
    if method not in REDUCERS:
        raise InvalidInputError(f"reduce must be one of {', '.join(REDUCERS)} (or None), got {method!r}.")
    x = check_features(x, "x", min_rows=3)
    dim = DEFAULT_COMPONENTS[method] if n_components is None else n_components
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise InvalidInputError(f"n_components must be a positive integer, got {n_components!r}.")
    if method == "pca":
        from sklearn.decomposition import PCA

        dim = int(min(dim, x.shape[1], len(x) - 1))
        model: Any = PCA(n_components=dim, random_state=seed)
    else:
        dim = int(min(dim, len(x) - 2))
        model = _umap(seed, dim, int(min(n_neighbors, len(x) - 1)), "cosine" if spherical else "euclidean")
    reduced = np.ascontiguousarray(model.fit_transform(x), dtype=np.float32)
    return reduced, Reduction(method=method, n_components=dim, model=model)


__all__ = ["REDUCERS", "DEFAULT_COMPONENTS", "UMAP_HINT", "Reduction", "reduce_features", "require_umap"]
