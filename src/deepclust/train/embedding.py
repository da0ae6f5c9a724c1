"""Deprecated: a method's embeddings now come from `deepclust.models.encoder.embed_images`
/ `embed_with_head` on ``method.encoder()`` and ``method.cluster_head()``. This shim keeps
the old call ``embed_images(method, images, with_logits=...)`` working until its last
callers (features/trained.py, estimator.py, benchmarks) have moved; it will be deleted."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from deepclust.models.encoder import embed_with_head


def embed_images(method: Any, images: np.ndarray, *, device: torch.device | str = "cpu", batch_size: int = 256,
                 indices: np.ndarray | None = None, with_logits: bool = False, amp_dtype: torch.dtype | None = None,
                 progress: bool = False, desc: str = "embed") -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """``embed_with_head(method.encoder(), ...)``; with `with_logits`, also the k-way head's
    outputs (None when the method has none)."""
    head = method.cluster_head() if with_logits else None
    emb, logits = embed_with_head(method.encoder(), images, device=device, batch_size=batch_size, indices=indices,
                                  head=head, amp_dtype=amp_dtype, progress=progress, desc=desc)
    return (emb, logits) if with_logits else emb
