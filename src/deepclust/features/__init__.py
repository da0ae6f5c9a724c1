"""Feature extraction: images in an `ImageStore` -> ``(N, D)`` float32 matrix, cached on disk.

Kinds of feature are registered with `register_feature_kind(predicate, extractor)`: the first
kind whose predicate accepts the spec string extracts the features. Built in: ``raw`` and
``pca``; trained run directories and ``hf:<model>`` register themselves from the modules
that own them (imported lazily here, see `_PROVIDER_PACKAGES`). Every kind gets the on-disk
cache of `deepclust.features.cache` for free.

An extractor is called as ``extractor(store, spec, device=..., batch_size=..., **options)``
(plus ``progress=...`` if it takes that parameter) and returns an ``(N, D)`` array. The cache key holds the extractor's options with its
defaults filled in, so only options that change the result should be parameters.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from deepclust.errors import DeepclustError
from deepclust.features import cache as _cache
from deepclust.features.baseline import pca_features, raw_features

if TYPE_CHECKING:
    from deepclust.data.store import ImageStore

__all__ = ["extract_features", "register_feature_kind", "feature_kinds", "FeatureKind"]

log = logging.getLogger(__name__)

# Arguments every extractor receives that do not change the features (not part of the key).
_RUNTIME_ARGS = {"store", "spec", "device", "batch_size", "progress"}
# Packages whose import registers more kinds (trained run directories, Hugging Face models).
# Imported only when no registered kind matches, so `import deepclust.features` stays light.
_PROVIDER_PACKAGES = ("deepclust.features.trained", "deepclust.features.pretrained")


@dataclass(frozen=True)
class FeatureKind:
    name: str  # shown in error messages, e.g. "raw" or "hf:<model id or dir>"
    predicate: Callable[[str], bool]
    extractor: Callable[..., np.ndarray]
    key_extra: Callable[[str], str] | None = None  # e.g. a checkpoint's mtime, so retraining invalidates


_KINDS: list[FeatureKind] = []


def register_feature_kind(
    predicate: Callable[[str], bool],
    extractor: Callable[..., np.ndarray],
    *,
    name: str | None = None,
    key_extra: Callable[[str], str] | None = None,
) -> None:
    """Make ``extract_features`` handle every spec for which ``predicate(spec)`` is true.

    Args:
        predicate: decides whether this kind handles a spec string.
        extractor: ``extractor(store, spec, *, device, batch_size, **options) -> (N, D) array``.
        name: how the kind is listed in error messages (default: the extractor's name).
        key_extra: optional ``spec -> str`` mixed into the cache key for state outside the
            spec and options (e.g. the weights file's modification time).

    Registering the same extractor again replaces the earlier entry (safe on re-import).
    """
    kind = FeatureKind(name or getattr(extractor, "__name__", repr(extractor)), predicate, extractor, key_extra)
    _KINDS[:] = [k for k in _KINDS if k.extractor is not extractor]
    _KINDS.append(kind)


def feature_kinds() -> list[str]:
    """Names of the registered kinds, in the order they are tried."""
    return [k.name for k in _KINDS]


def _find_kind(spec: str) -> FeatureKind | None:
    for kind in _KINDS:
        if kind.predicate(spec):
            return kind
    return None


def _find_kind_in_providers(spec: str) -> FeatureKind | None:
    """Import provider packages one at a time until a kind accepts ``spec``."""
    for package in _PROVIDER_PACKAGES:
        # Skip packages that are not part of this installation; import errors inside an
        # existing package are real bugs and propagate.
        if importlib.util.find_spec(package) is not None:
            importlib.import_module(package)
            kind = _find_kind(spec)
            if kind is not None:
                return kind
    return None


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def _options(kind: FeatureKind, spec: str, kw: dict[str, Any]) -> dict[str, Any]:
    """The extractor's result-changing options with defaults filled in (the cache key)."""
    params = inspect.signature(kind.extractor).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    accepted = [n for n, p in params.items() if n not in _RUNTIME_ARGS and p.kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = sorted(set(kw) - set(params)) if not takes_any else []
    if unknown:
        raise DeepclustError(
            f"feature kind {kind.name!r} does not take option(s) {', '.join(unknown)}; "
            f"it accepts: {', '.join(accepted) or 'none'}."
        )
    options = {n: p.default for n, p in params.items() if n in accepted and p.default is not inspect.Parameter.empty}
    options.update({n: v for n, v in kw.items() if n not in _RUNTIME_ARGS})
    if kind.key_extra is not None:
        options["__extra__"] = kind.key_extra(spec)
    return options


def extract_features(
    store: "ImageStore",
    spec: str = "raw",
    *,
    device: str = "cpu",
    batch_size: int = 256,
    cache: bool = True,
    progress: bool = True,
    **kw: Any,
) -> np.ndarray:
    """Features of every image in ``store``: ``(N, D)`` float32, finite.

    Args:
        store: the images (`deepclust.data.store.ImageStore`; uses ``.images`` and ``.source_id``).
        spec: ``raw``, ``pca``, a trained run directory, ``hf:<model id or dir>``, or any
            registered kind.
        device: torch device for model-based kinds.
        batch_size: images per forward pass / conversion chunk.
        cache: read and write ``$DEEPCLUST_CACHE/features/``; False recomputes and stores nothing.
        progress: show a progress bar (passed to extractors that take ``progress``).
        **kw: options of the kind, e.g. ``pca_dim=50, whiten=True, seed=0`` for ``pca``.

    Raises:
        DeepclustError: unknown spec (the message lists the valid kinds), an option the kind
            does not take, or an extractor that returned a malformed matrix.
    """
    if not isinstance(spec, str) or not spec:
        raise DeepclustError(f"feature spec must be a non-empty string such as 'raw' or 'pca', got {spec!r}.")
    kind = _find_kind(spec) or _find_kind_in_providers(spec)
    if kind is None:
        raise DeepclustError(
            f"unknown feature spec {spec!r}; valid kinds: {', '.join(feature_kinds())}."
        )
    n_images = len(store.images)
    options = _options(kind, spec, kw)
    path = _cache.cache_path(str(store.source_id), spec, options) if cache else None
    if path is not None:
        cached = _cache.load_cached(path, n_images)
        if cached is not None:
            log.info("features %s: cache hit %s", spec, path)
            return cached

    if _accepts(kind.extractor, "progress"):
        kw = {**kw, "progress": progress}
    features = kind.extractor(store, spec, device=device, batch_size=batch_size, **kw)
    features = np.asarray(features)
    if features.ndim != 2 or features.shape[0] != n_images:
        raise DeepclustError(
            f"feature kind {kind.name!r} returned shape {features.shape} for {n_images} images; expected (N, D)."
        )
    features = np.ascontiguousarray(features, dtype=np.float32)
    if not np.isfinite(features).all():
        raise DeepclustError(
            f"feature kind {kind.name!r} produced NaN or infinite values for {spec!r}; "
            "the model may be broken (check its checkpoint) or the input corrupt."
        )
    if path is not None:
        _cache.save_atomic(path, features)
    return features


register_feature_kind(lambda spec: spec == "raw", raw_features, name="raw")
register_feature_kind(lambda spec: spec == "pca", pca_features, name="pca")
