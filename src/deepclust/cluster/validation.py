"""Input checks shared by the clustering and evaluation code.

Checks live at the boundary (scikit-learn style): public functions validate what they are
given and raise `InvalidInputError` with a message that says what was wrong and what to do,
so that a bad array fails early instead of deep inside faiss or a matrix product.
"""

from __future__ import annotations

import numbers

import numpy as np

from deepclust.errors import DeepclustError


class InvalidInputError(DeepclustError, ValueError):
    """An array or parameter has the wrong shape, type or value.

    A `ValueError` too, so callers written against scikit-learn conventions catch it.
    """


def check_features(x, name: str = "x", *, min_rows: int = 1) -> np.ndarray:
    """Return `x` as a C-contiguous float32 `(N, D)` array, or raise `InvalidInputError`."""
    try:
        arr = np.asarray(x)
    except Exception as exc:  # e.g. ragged nested lists
        raise InvalidInputError(f"{name} must be a 2-D numeric array (N, D); could not convert it: {exc}") from exc
    if arr.ndim != 2:
        raise InvalidInputError(
            f"{name} must be a 2-D array of shape (N, D), got shape {arr.shape}; "
            "flatten each sample to one row (e.g. x.reshape(len(x), -1))."
        )
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InvalidInputError(f"{name} must be numeric, got dtype {arr.dtype}.")
    if arr.shape[0] < min_rows or arr.shape[1] < 1:
        raise InvalidInputError(
            f"{name} has shape {arr.shape}; it needs at least {min_rows} row(s) and 1 column."
        )
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        n_bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InvalidInputError(
            f"{name} contains NaN or infinite values in {n_bad} row(s) (or overflows float32); "
            "remove or impute those rows first."
        )
    return arr


def check_n_clusters(k, n_samples: int, name: str = "k") -> int:
    """Return `k` as an int in `[1, n_samples]`, or raise `InvalidInputError`."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidInputError(f"{name} must be an integer number of clusters, got {k!r}.")
    k = int(k)
    if k < 1:
        raise InvalidInputError(f"{name} must be at least 1, got {k}.")
    if k > n_samples:
        raise InvalidInputError(
            f"{name}={k} clusters requested but there are only {n_samples} samples; "
            f"use {name} <= {n_samples}."
        )
    return k


def check_labels(y, name: str = "y") -> np.ndarray:
    """Return `y` as a 1-D int64 array, or raise `InvalidInputError` (floats must be whole numbers)."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InvalidInputError(f"{name} must be a 1-D array of integer labels, got shape {arr.shape}.")
    if arr.dtype.kind in "iu" or arr.dtype == bool:
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.all(arr == np.round(arr)):
            raise InvalidInputError(f"{name} must hold integer labels; it has non-integer or NaN values.")
        return arr.astype(np.int64)
    raise InvalidInputError(f"{name} must hold integer labels, got dtype {arr.dtype}.")


def check_same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise InvalidInputError(f"{name_a} has {len(a)} entries but {name_b} has {len(b)}; they must match.")
