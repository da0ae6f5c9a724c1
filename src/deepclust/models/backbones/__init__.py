"""Backbones: ``build_backbone(name, ...)`` -> an ``nn.Module`` with ``embed_dim`` and
``forward(x: float (B, C, H, W)) -> (B, embed_dim)`` pooled features.

Names: ``resnet18``, ``resnet34``, ``resnet50`` (stem chosen from ``img_size``: the CIFAR
3x3 stem up to 64 px, the ImageNet 7x7 + max-pool stem above; force it with ``stem=`` or
the ``_cifar`` / ``_imagenet`` suffixes), ``small_cnn``, ``vit_tiny``, ``vit_small``, and
``vit_tiny_convstem`` / ``vit_small_convstem`` (the same ViTs with a convolutional stem,
`deepclust.models.backbones.vit_convstem`).

``channels_last=True`` stores conv-net weights in ``torch.channels_last`` and converts
inputs in ``forward``: faster convolutions under AMP on GPUs (tensor cores) and with
oneDNN on CPUs that support it. It has no effect on ViTs (only their patch conv is a
convolution), so it is ignored there.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from deepclust.errors import DeepclustError
from deepclust.models.backbones.resnet import ResNet, resnet18, resnet34, resnet50
from deepclust.models.backbones.small_cnn import SmallCNN
from deepclust.models.backbones.vit import VisionTransformer, default_patch_size, vit_small, vit_tiny
from deepclust.models.backbones.vit_convstem import ConvStemViT, vit_small_convstem, vit_tiny_convstem


class UnknownBackboneError(DeepclustError, ValueError):
    """A backbone name or option that does not exist (a ``ValueError`` for library users,
    a ``DeepclustError`` so the CLI prints the message)."""


def _resnet_builder(fn: Callable[..., ResNet], forced_stem: str | None):
    def build(*, in_chans: int, img_size: int, channels_last: bool, **kw) -> ResNet:
        stem = kw.pop("stem", None) or forced_stem or ("cifar" if img_size <= 64 else "imagenet")
        return fn(in_chans=in_chans, stem=stem, channels_last=channels_last, **kw)
    build.target = ResNet  # type: ignore[attr-defined]
    return build


def _small_cnn(*, in_chans: int, img_size: int, channels_last: bool, **kw) -> SmallCNN:
    if "stem_stride" not in kw:
        kw["stem_stride"] = 1 if img_size <= 48 else (2 if img_size <= 96 else 4)
    return SmallCNN(in_chans=in_chans, channels_last=channels_last, **kw)


_small_cnn.target = SmallCNN  # type: ignore[attr-defined]


def _vit_builder(fn: Callable[..., VisionTransformer], target: type[VisionTransformer] = VisionTransformer):
    def build(*, in_chans: int, img_size: int, channels_last: bool, **kw) -> VisionTransformer:
        del channels_last  # no benefit for a ViT, see module docstring
        return fn(in_chans=in_chans, img_size=img_size, **kw)
    build.target = target  # type: ignore[attr-defined]
    return build


_BUILDERS: dict[str, Callable[..., nn.Module]] = {}
for _depth, _fn in (("18", resnet18), ("34", resnet34), ("50", resnet50)):
    _BUILDERS[f"resnet{_depth}"] = _resnet_builder(_fn, None)
    _BUILDERS[f"resnet{_depth}_cifar"] = _resnet_builder(_fn, "cifar")
    _BUILDERS[f"resnet{_depth}_imagenet"] = _resnet_builder(_fn, "imagenet")
_BUILDERS["small_cnn"] = _small_cnn
_BUILDERS["vit_tiny"] = _vit_builder(vit_tiny)
_BUILDERS["vit_small"] = _vit_builder(vit_small)
_BUILDERS["vit"] = _vit_builder(VisionTransformer)  # every size given in backbone_kwargs (--init)
_BUILDERS["vit_tiny_convstem"] = _vit_builder(vit_tiny_convstem, ConvStemViT)  # Xiao et al. 2021 conv stem
_BUILDERS["vit_small_convstem"] = _vit_builder(vit_small_convstem, ConvStemViT)

BACKBONE_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def build_backbone(name: str, *, in_chans: int = 3, img_size: int = 32,
                   channels_last: bool = False, **kw) -> nn.Module:
    """Build a backbone by name; extra keyword arguments go to its constructor.

    Args:
        name: one of ``BACKBONE_NAMES``.
        in_chans: 3 for RGB, 2 for DeepCluster's Sobel input.
        img_size: working image size; picks the ResNet stem, the small CNN's stem stride,
            and the ViT's position-embedding grid (and default patch size).
        channels_last: see the module docstring.
        **kw: e.g. ``stem``, ``zero_init_residual`` (ResNet); ``widths``,
            ``convs_per_stage`` (small CNN); ``patch_size``, ``drop_path_rate`` (ViT).

    Raises:
        UnknownBackboneError (a ``ValueError``): unknown name or keyword.
    """
    key = name.lower().replace("-", "_")
    if key not in _BUILDERS:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}; valid names are: {', '.join(BACKBONE_NAMES)}")
    if in_chans < 1 or img_size < 1:
        raise UnknownBackboneError(
            f"backbone {name!r} needs in_chans >= 1 and img_size >= 1, got {in_chans}, {img_size}")
    builder = _BUILDERS[key]
    target = builder.target  # type: ignore[attr-defined]
    accepted = set(inspect.signature(target.__init__).parameters) - {"self", "block", "layers"}
    unknown = sorted(set(kw) - accepted)
    if unknown:
        raise UnknownBackboneError(
            f"backbone {name!r} does not take option(s) {unknown}; it accepts "
            f"{sorted(accepted - {'in_chans', 'img_size', 'channels_last'})}")
    model = builder(in_chans=in_chans, img_size=img_size, channels_last=channels_last, **kw)
    if channels_last and not isinstance(model, VisionTransformer):
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


__all__ = [
    "BACKBONE_NAMES", "ConvStemViT", "ResNet", "SmallCNN", "UnknownBackboneError", "VisionTransformer",
    "build_backbone", "default_patch_size", "resnet18", "resnet34", "resnet50", "vit_small",
    "vit_small_convstem", "vit_tiny", "vit_tiny_convstem",
]
