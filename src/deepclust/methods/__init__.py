"""Self-supervised clustering methods, one module each, all implementing
``deepclust.methods.base.Method`` for the one training loop.

``build_method(name, backbone, k=..., img_size=..., **method_kwargs)`` is how the loop
and the estimator make one; ``METHODS`` maps names to classes.
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from deepclust.methods.base import Method
from deepclust.methods.common import MethodConfigError
from deepclust.methods.deepcluster import DeepCluster
from deepclust.methods.dino import DINO
from deepclust.methods.swav import SwAV

METHODS: dict[str, type[Method]] = {
    "deepcluster": DeepCluster,
    "swav": SwAV,
    "dino": DINO,
}


def get_method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (case-insensitive)."""
    key = str(name).lower().replace("-", "_")
    if key not in METHODS:
        raise MethodConfigError(f"unknown method {name!r}; valid names are: {', '.join(METHODS)}")
    return METHODS[key]


def method_kwargs_accepted(name: str) -> list[str]:
    """The hyper-parameter names ``build_method`` accepts for ``name``."""
    params = inspect.signature(get_method_class(name).__init__).parameters
    return [p for p in params if p not in ("self", "backbone", "k", "img_size")]


def method_in_chans(name: str, **method_kwargs: Any) -> int:
    """Input channels the backbone needs for this method and hyper-parameters: 2 for
    Sobel input (DeepCluster's ``sobel=True`` or ``augment: {sobel: true}``), else 3."""
    get_method_class(name)
    augment = method_kwargs.get("augment") or {}
    return 2 if method_kwargs.get("sobel", False) or augment.get("sobel", False) else 3


def build_method(name: str, backbone: nn.Module, *, k: int, img_size: int, **method_kwargs: Any) -> Method:
    """Build the method ``name`` around ``backbone``.

    Args:
        name: one of ``METHODS`` (deepcluster, swav, dino).
        backbone: from ``deepclust.models.backbones.build_backbone`` (``in_chans`` must be
            ``method_in_chans(name, **method_kwargs)``).
        k: number of clusters wanted.
        img_size: working image size of the store.
        **method_kwargs: the method's hyper-parameters (see its class docstring).

    Raises:
        MethodConfigError (a DeepclustError and ValueError): unknown name or hyper-parameter,
        or a value that does not make sense.
    """
    cls = get_method_class(name)
    accepted = method_kwargs_accepted(name)
    unknown = sorted(set(method_kwargs) - set(accepted))
    if unknown:
        raise MethodConfigError(f"method {name!r} does not take {unknown}; it accepts: {', '.join(accepted)}")
    if int(k) < 1 or int(img_size) < 1:
        raise MethodConfigError(f"k and img_size must be positive, got k={k}, img_size={img_size}")
    return cls(backbone, k=int(k), img_size=int(img_size), **method_kwargs)


__all__ = ["DINO", "METHODS", "DeepCluster", "Method", "MethodConfigError", "SwAV", "build_method",
           "get_method_class", "method_in_chans", "method_kwargs_accepted"]
