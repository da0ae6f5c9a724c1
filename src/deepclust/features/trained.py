"""Features from a trained run directory (`deepclust train --out runs/x`).

`extract_features(store, "runs/x")` and `deepclust cluster SOURCE --model runs/x` rebuild the
method from the run's config.json, load model.safetensors (no pickle) and embed every
image with `method.preprocess` + `method.embed` in eval mode, batched, with a progress bar.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepclust.errors import DataError
from deepclust.features import register_feature_kind


def is_run_dir(spec: str) -> bool:
    try:
        path = Path(spec)
        return path.is_dir() and (path / "model.safetensors").is_file()
    except (OSError, ValueError):
        return False


def _weights_stamp(spec: str) -> str:
    """Mixed into the feature-cache key: retraining (new weights) invalidates cached features."""
    st = (Path(spec) / "model.safetensors").stat()
    return f"{st.st_mtime_ns}-{st.st_size}"


def trained_run_features(store, spec: str, *, device: str = "cpu", batch_size: int = 256,
                         progress: bool = True) -> np.ndarray:
    """(N, D) float32 backbone features of `store` from the run directory `spec`."""
    import torch

    from deepclust.train.builder import load_trained_method
    from deepclust.train.embedding import embed_images

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    method, cfg = load_trained_method(spec, device=device)
    images = store.images
    if images.shape[1] != cfg.image_size:
        raise DataError(
            f"the run in {spec} was trained on {cfg.image_size}px images but this store holds "
            f"{images.shape[1]}px ones: load the source with size={cfg.image_size} (--size {cfg.image_size})")
    return embed_images(method, images, device=device, batch_size=batch_size, progress=progress,
                        desc=f"embed with {Path(spec).name}").astype(np.float32)


register_feature_kind(is_run_dir, trained_run_features, name="<trained run dir>", key_extra=_weights_stamp)
