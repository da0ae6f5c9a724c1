"""On-disk cache of feature matrices: ``$DEEPCLUST_CACHE/features/<name>.npy``.

The key is the store's ``source_id`` (a stable hash of the source and working size), the
feature spec, and every option that changes the result (defaults filled in, so ``pca`` and
``pca`` with ``pca_dim=50`` share an entry). Files are written to a temporary name in the
same directory and renamed, so a crash never leaves a half-written matrix that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from deepclust.core.io import atomic_save_npy


def cache_root() -> Path:
    """``$DEEPCLUST_CACHE`` or ``~/.cache/deepclust`` (the same root the data layer uses)."""
    env = os.environ.get("DEEPCLUST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepclust"


def features_dir() -> Path:
    return cache_root() / "features"


def cache_key(source_id: str, spec: str, options: dict[str, Any]) -> str:
    """Hex digest identifying one feature matrix; any change in the inputs changes it."""
    payload = json.dumps({"source": source_id, "spec": spec, "options": options}, sort_keys=True, default=repr)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def cache_path(source_id: str, spec: str, options: dict[str, Any]) -> Path:
    # A readable prefix (spec, sanitised and shortened) helps people find and prune entries.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", spec)[-40:].strip("-.") or "features"
    return features_dir() / f"{readable}-{cache_key(source_id, spec, options)}.npy"


def load_cached(path: Path, n_rows: int) -> np.ndarray | None:
    """The cached matrix if it exists and looks right (2-D float32 with ``n_rows`` rows), else None."""
    if not path.is_file():
        return None
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None  # unreadable or truncated: recompute and overwrite
    if arr.ndim != 2 or arr.shape[0] != n_rows or arr.dtype != np.float32:
        return None
    return arr


def save_atomic(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as .npy to ``path`` through the one atomic writer."""
    atomic_save_npy(path, array)
