"""Baseline features that need no training: raw pixels and their PCA.

They are the floor every learned representation must beat (k-means on raw CIFAR-10 pixels
gives roughly 20% ACC).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from deepclust.errors import DeepclustError

if TYPE_CHECKING:
    from deepclust.data.store import ImageStore


def raw_features(store: "ImageStore", spec: str = "raw", *, device: str = "cpu", batch_size: int = 256) -> np.ndarray:
    """Flattened pixels scaled to [0, 1]: ``(N, S*S*3)`` float32.

    Converted in chunks of ``batch_size`` images so a memory-mapped store is read once,
    sequentially.
    """
    images = store.images
    n = len(images)
    out = np.empty((n, int(np.prod(images.shape[1:]))), dtype=np.float32)
    step = max(1, int(batch_size))
    for start in range(0, n, step):
        chunk = np.asarray(images[start : start + step])
        out[start : start + len(chunk)] = chunk.reshape(len(chunk), -1).astype(np.float32) / 255.0
    return out


def pca_features(
    store: "ImageStore",
    spec: str = "pca",
    *,
    device: str = "cpu",
    batch_size: int = 256,
    pca_dim: int = 50,
    whiten: bool = True,
    seed: int = 0,
) -> np.ndarray:
    """Raw pixels projected on their first ``pca_dim`` principal components: ``(N, pca_dim)`` float32.

    Whitened by default (each component scaled to unit variance), so k-means is not
    dominated by the first few components. scikit-learn picks the randomized solver for
    large inputs; ``seed`` makes it deterministic.
    """
    from sklearn.decomposition import PCA

    x = raw_features(store, device=device, batch_size=batch_size)
    limit = min(x.shape)
    if isinstance(pca_dim, bool) or not isinstance(pca_dim, (int, np.integer)) or not 1 <= pca_dim <= limit:
        raise DeepclustError(
            f"pca_dim must be an integer between 1 and min(n_images, n_pixels) = {limit}, got {pca_dim!r}."
        )
    pca = PCA(n_components=int(pca_dim), whiten=whiten, random_state=seed)
    return pca.fit_transform(x).astype(np.float32)
