"""Models and their embeddings: any model spec -> `LoadedModel` (an `Encoder` plus what goes
with it) -> ``(N, D)`` embeddings of a store, cached on disk.

* `load_model(spec, device=...)`: the one loader (``raw``, ``pca``, ``hf:<id or dir>``, a
  Hugging Face folder, a training run directory, an ``nn.Module``); see
  `deepclust.features.load`.
* `embed_store(loaded, store)`: one pass over the images, embeddings (and the run's
  cluster-head logits) cached by store + model identity + options; see
  `deepclust.features.embed`.
* `extract_features(store, spec, **options)`: the two in one call, for scripts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from deepclust.features.embed import Embedded, embed_store
from deepclust.features.load import MODEL_KINDS, LoadedModel, is_run_dir, load_model, spec_kind

__all__ = ["extract_features", "load_model", "embed_store", "LoadedModel", "Embedded", "is_run_dir",
           "spec_kind", "MODEL_KINDS"]


def extract_features(
    store: Any,
    spec: str = "raw",
    *,
    device: str = "auto",
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = True,
    precision: str = "auto",
    **options: Any,
) -> np.ndarray:
    """Embeddings ``(N, D)`` float32 of every image in ``store`` with the model ``spec``.

    ``options`` go to `load_model` (``pca_dim``, ``seed``, ``pooling``, ``resolution``).
    """
    size = int(store.images.shape[1]) if spec in ("raw", "pca") else None
    loaded = load_model(spec, device=device, image_size=size, **options)
    return embed_store(loaded, store, batch_size=batch_size, cache=cache, precision=precision,
                       progress=progress).features
