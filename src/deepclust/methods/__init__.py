"""Self-supervised clustering methods, one module each, all implementing
``deepclust.methods.base.Method`` for the one training loop.

``build_method(name, backbone, k=..., img_size=..., **method_kwargs)`` is how the loop
and the estimator make one; ``METHODS`` maps names to classes. Each method's
hyper-parameters are a typed dataclass (``DINOConfig``, ``SwAVConfig``,
``DeepClusterConfig``; ``method_config_class(name)``): unknown keys and wrong types are
reported with the valid keys / the expected type.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from deepclust.methods.base import Method, StepOutput, StepState, TeacherSchedule, TrainContext
from deepclust.methods.clip import ALIGN, CLIP, ImageTextConfig, UniCL
from deepclust.methods.config import MethodConfigError, TypedConfig, config_from_mapping, field_names
from deepclust.methods.dac import DAC, DACConfig
from deepclust.methods.deepcluster import DeepCluster, DeepClusterConfig
from deepclust.methods.dino import DINO, DINOConfig
from deepclust.methods.dinov2 import DINOv2, DINOv2Config
from deepclust.methods.ibot import iBOT, iBOTConfig
from deepclust.methods.scan import SCAN, SCANConfig
from deepclust.methods.swav import SwAV, SwAVConfig

METHODS: dict[str, type[Method]] = {
    "deepcluster": DeepCluster,
    "swav": SwAV,
    "dino": DINO,
    "ibot": iBOT,
    "dinov2": DINOv2,
    "dac": DAC,
    "scan": SCAN,
    "clip": CLIP,
    "align": ALIGN,
    "unicl": UniCL,
}


def get_method_class(name: str) -> type[Method]:
    """The class registered as ``name`` (case-insensitive)."""
    key = str(name).lower().replace("-", "_")
    if key not in METHODS:
        raise MethodConfigError(f"unknown method {name!r}; valid names are: {', '.join(METHODS)}")
    return METHODS[key]


def method_config_class(name: str) -> type[TypedConfig]:
    """The typed config dataclass of method ``name``."""
    return get_method_class(name).Config


def method_kwargs_accepted(name: str) -> list[str]:
    """The hyper-parameter names ``build_method`` accepts for ``name``."""
    return field_names(method_config_class(name))


def method_config(name: str, method_kwargs: dict[str, Any] | None) -> TypedConfig:
    """``method_kwargs`` checked against the method's config (unknown keys, types)."""
    cls = get_method_class(name)
    return config_from_mapping(cls.Config, method_kwargs, where=f"method {cls.name!r}")


def method_in_chans(name: str, **method_kwargs: Any) -> int:
    """Input channels the backbone needs for this method and hyper-parameters: 2 for
    Sobel input (DeepCluster's ``sobel=True`` or ``augment: {sobel: true}``), else 3."""
    get_method_class(name)
    augment = method_kwargs.get("augment") or {}
    return 2 if method_kwargs.get("sobel", False) or augment.get("sobel", False) else 3


def build_method(name: str, backbone: nn.Module, *, k: int, img_size: int, **method_kwargs: Any) -> Method:
    """Build the method ``name`` around ``backbone``.

    Args:
        name: one of ``METHODS`` (deepcluster, swav, dino, ibot, dinov2, dac, scan; clip, align,
            unicl train on image-caption pairs).
        backbone: a trunk from ``deepclust.models.backbones.build_backbone`` (``in_chans``
            must be ``method_in_chans(name, **method_kwargs)``) or an ``Encoder``; a trunk is
            wrapped in a ``BackboneEncoder`` with the method's evaluation transform.
        k: number of clusters wanted.
        img_size: working image size of the store.
        **method_kwargs: the method's hyper-parameters (fields of its config dataclass).

    Raises:
        MethodConfigError (a DeepclustError and ValueError): unknown name or hyper-parameter,
        a value of the wrong type, or a value that does not make sense.
    """
    cls = get_method_class(name)
    config = method_config(name, method_kwargs)
    if int(k) < 1 or int(img_size) < 1:
        raise MethodConfigError(f"k and img_size must be positive, got k={k}, img_size={img_size}")
    return cls(backbone, config, k=int(k), img_size=int(img_size))  # type: ignore[call-arg]


__all__ = ["ALIGN", "CLIP", "DAC", "DACConfig", "ImageTextConfig", "UniCL",
           "DINO", "DINOConfig", "DINOv2", "DINOv2Config", "DeepCluster",
           "DeepClusterConfig", "METHODS", "SCAN", "SCANConfig", "Method", "MethodConfigError", "StepOutput",
           "StepState", "SwAV",
           "SwAVConfig", "TeacherSchedule", "TrainContext", "build_method", "get_method_class", "iBOT",
           "iBOTConfig", "method_config", "method_config_class", "method_in_chans", "method_kwargs_accepted"]
