"""PCA whitening + L2-normalisation of features before k-means (DeepCluster's
``preprocess_features``), as a transform fitted on one set and applied to others.

Why: self-supervised embeddings of small images keep a few high-variance directions that are
not about the classes (stroke width, contrast), and k-means follows them. Whitening gives
every kept direction unit variance. On the digits, k-means ACC on L2-normalised SwAV
embeddings was 0.73-0.76 and 0.86-0.90 after whitening to 24 dimensions, while k-NN accuracy
(which does not care) stayed about 0.96. Too many dimensions hurt (64: 0.60): the
low-variance directions are mostly noise once scaled up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deepclust.cluster.kmeans import l2_normalize


@dataclass
class Whitener:
    """``x -> l2_normalize((x - mean) @ projection)``; ``(N, D) -> (N, d)`` float32."""

    mean: np.ndarray        # (D,)
    projection: np.ndarray  # (D, d): top-d principal axes, each divided by its standard deviation

    @classmethod
    def fit(cls, x: np.ndarray, dim: int, eps: float = 1e-5) -> Whitener:
        """Principal axes of ``x`` (N, D); ``d = min(dim, D, N - 1)``."""
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0)
        xc = x - mean
        dim = max(1, min(int(dim), x.shape[1], x.shape[0] - 1))
        eigval, eigvec = np.linalg.eigh(xc.T @ xc / max(1, len(x) - 1))  # ascending order
        order = np.argsort(eigval)[::-1][:dim]
        projection = eigvec[:, order] / np.sqrt(np.maximum(eigval[order], 0.0) + eps)
        return cls(mean.astype(np.float32), projection.astype(np.float32))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return l2_normalize((np.asarray(x, np.float32) - self.mean) @ self.projection)


def pca_whiten(x: np.ndarray, dim: int, eps: float = 1e-5) -> np.ndarray:
    """Whiten ``x`` with its own principal axes: ``(N, D) -> (N, min(dim, D, N - 1))``."""
    return Whitener.fit(x, dim, eps)(x)


def cluster_space(x: np.ndarray, whiten_dim: int = 0) -> np.ndarray:
    """The features k-means sees for learned embeddings: whitened to `whiten_dim`
    dimensions and L2-normalised, or only L2-normalised when `whiten_dim` is 0."""
    return pca_whiten(x, whiten_dim) if whiten_dim else l2_normalize(np.asarray(x, np.float32))
