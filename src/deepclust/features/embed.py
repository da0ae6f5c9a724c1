"""`embed_store`: a `LoadedModel`'s embeddings of an `ImageStore`, cached on disk.

One pass over the images through the one loop (`deepclust.models.encoder.embed_with_head`)
gives the embeddings ``(N, D)`` and, when the model has a k-way cluster head, its logits
``(N, k)``. Both are cached (``$DEEPCLUST_CACHE/features``, `deepclust.features.cache`: no
pickle, atomic writes) under a key made of the store's ``source_id``, the model's identity
and the options that change the numbers (precision), so a second ``cluster`` with another
k embeds nothing. A PCA encoder is fitted on the store first (on a cache miss); the key of
a PCA's embeddings names the store it was fitted on, so another store embedded through it
never hits that store's own PCA.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepclust.core.device import amp_dtype
from deepclust.errors import DataError, DeepclustError
from deepclust.features import cache as _cache
from deepclust.features.load import LoadedModel
from deepclust.models.encoder import PCAEncoder, embed_with_head

log = logging.getLogger(__name__)


@dataclass
class Embedded:
    """Embeddings of a store: ``features (N, D)`` float32, head ``logits (N, k)`` or None."""

    features: np.ndarray
    logits: np.ndarray | None
    seconds: float
    cached: bool


def check_store_size(loaded: LoadedModel, store: Any) -> None:
    """A run's encoder only accepts the working size it was trained on."""
    size = int(np.asarray(store.images).shape[1]) if len(store.images) else None
    if loaded.image_size is not None and size is not None and size != loaded.image_size:
        raise DataError(
            f"the run in {loaded.spec} was trained on {loaded.image_size}px images but this store holds "
            f"{size}px ones: load the source with size={loaded.image_size} (--size {loaded.image_size})")


def embed_store(
    loaded: LoadedModel,
    store: Any,
    *,
    batch_size: int = 256,
    cache: bool = True,
    precision: str = "auto",
    progress: bool = True,
) -> Embedded:
    """Embed every image of ``store`` (``.images`` uint8 (N, S, S, 3), ``.source_id``) once.

    Raises:
        DataError: wrong working size for a run. DeepclustError: NaN/inf embeddings.
    """
    check_store_size(loaded, store)
    start = time.perf_counter()
    images = store.images
    dtype = amp_dtype(precision, loaded.device)
    with_head = loaded.head is not None
    paths = None
    encoder = loaded.encoder
    pca = isinstance(encoder, PCAEncoder)
    # A PCA's embeddings depend on the images it was fitted on: this store (fitted below on a
    # cache miss) or, once fitted, whatever `fitted_on` names (unknown: not cached).
    fitted_on = (encoder.fitted_on if encoder.fitted else getattr(store, "source_id", None)) if pca else None
    if cache and loaded.identity is not None and getattr(store, "source_id", None) and (fitted_on or not pca):
        options = {"amp": str(dtype), **({"pca_fitted_on": str(fitted_on)} if pca else {})}
        paths = (_cache.cache_path(str(store.source_id), loaded.identity, options),
                 _cache.cache_path(str(store.source_id), loaded.identity, {**options, "head": True}))
        features = _cache.load_cached(paths[0], len(images))
        logits = _cache.load_cached(paths[1], len(images)) if with_head else None
        if features is not None and (logits is not None or not with_head):
            log.info("embeddings of %s: cache hit %s", loaded.spec, paths[0])
            return Embedded(features, logits, time.perf_counter() - start, True)
    if isinstance(encoder, PCAEncoder) and not encoder.fitted:
        encoder.fit(np.asarray(images), batch_size=batch_size, source_id=getattr(store, "source_id", None))
    features, logits = embed_with_head(encoder, images, batch_size=batch_size, head=loaded.head,
                                       amp_dtype=dtype, progress=progress, desc=f"embed with {loaded.spec}")
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise DeepclustError(f"{loaded.spec} produced NaN or infinite embeddings; the model may be broken "
                             "(check its checkpoint) or the input corrupt.")
    if paths is not None:
        try:
            _cache.save_atomic(paths[0], features)
            if logits is not None:
                _cache.save_atomic(paths[1], np.ascontiguousarray(logits, dtype=np.float32))
        except OSError as exc:  # the cache is optional: a full or read-only cache never stops the work
            log.warning("embeddings of %s not cached (%s: %s); going on without the cache",
                        loaded.spec, paths[0].parent, exc.strerror or exc)
    return Embedded(features, logits, time.perf_counter() - start, False)


__all__ = ["Embedded", "embed_store", "check_store_size"]
