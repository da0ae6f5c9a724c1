"""The ``hf:`` feature kind: frozen DINOv2 / CLIP embeddings of an ImageStore.

``extract_features(store, "hf:facebook/dinov2-small", pooling="mean")`` lands here (this
module registers itself when ``deepclust.models.pretrained`` is imported, which
``deepclust.features`` does on the first ``hf:`` spec). Caching is done by
``extract_features``: the key holds the store, the spec, ``pooling``, ``resolution`` and
``precision``, plus the weights' modification time for local folders.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepclust.features import register_feature_kind


def is_hf_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith("hf:")


def hf_features(store, spec: str, *, device: str = "cpu", batch_size: int = 64,
                progress: bool = True, pooling: str = "cls", resolution: int | None = None,
                precision: str = "auto") -> np.ndarray:
    """``float32 (N, D)`` features of ``store.images`` from a pretrained model.

    Args:
        pooling: ``cls`` (CLS token; CLIP: the projected image embedding), ``mean`` (mean of
            patch tokens) or ``both`` (concatenated).
        resolution: square input size instead of the model's crop size (faster on a CPU).
        precision: ``auto`` (bf16/fp16 autocast on CUDA, float32 on CPU), ``fp32``, ``bf16``, ``fp16``.
    """
    from deepclust.models.pretrained import load_pretrained
    from deepclust.models.pretrained.encoder import check_pooling

    check_pooling(pooling)
    if device in (None, "auto"):
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = load_pretrained(spec, device=device, resolution=resolution)
    return encoder.embed(store.images, pooling=pooling, batch_size=batch_size,
                         precision=precision, progress=progress)


def _weights_stamp(spec: str) -> str:
    """For a local folder, the weights' size and mtime (re-saving invalidates the cache);
    hub ids are immutable enough by name (no network call here)."""
    path = Path(spec[3:]).expanduser()
    if not path.is_dir():
        return ""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in sorted(path.glob("*.safetensors")))


register_feature_kind(is_hf_spec, hf_features, name="hf:<model id or dir>", key_extra=_weights_stamp)
