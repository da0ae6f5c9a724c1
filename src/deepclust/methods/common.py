"""Pieces the method modules share: building their views from a recipe's ``augment`` dict
(crop sides aligned to the backbone's patch size), the matching evaluation transform, the
method's encoder, and input checks at construction time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from deepclust.data.views import EvalTransform, MultiCropAugment
from deepclust.methods.config import MethodConfigError
from deepclust.models.encoder import BackboneEncoder, Encoder


def align_to_patch(size: int, patch_size: int | None) -> int:
    """The multiple of ``patch_size`` nearest to ``size`` (ties upwards), at least one patch:
    14 -> 16 for patch 4, 12 -> 12; unchanged without a patch size (conv nets)."""
    if not patch_size:
        return int(size)
    return max(patch_size, int((size + patch_size / 2) // patch_size) * patch_size)


def build_views(defaults: Mapping[str, Any], augment: Mapping[str, Any] | None,
                patch_size: int | None = None) -> MultiCropAugment:
    """``MultiCropAugment`` from the method's defaults updated with the recipe's ``augment``;
    with a ViT (``patch_size``) every crop side is rounded to a multiple of the patch size,
    so each crop is a whole patch grid."""
    if augment is not None and not isinstance(augment, Mapping):
        raise MethodConfigError(f"augment must be a mapping of MultiCropAugment options, got {augment!r}")
    config = {**defaults, **(augment or {})}
    for key in ("global_size", "local_size"):
        if key in config and isinstance(config[key], int):
            config[key] = align_to_patch(config[key], patch_size)
    return MultiCropAugment.from_config(config)


def eval_transform_for(views: MultiCropAugment) -> EvalTransform:
    """The deterministic transform that matches ``views``: global-crop size, same
    normalisation, Sobel if the views use it."""
    return EvalTransform(views.global_size, mean=views.mean, std=views.std, sobel=views.sobel is not None)


def patch_size_of(backbone: nn.Module) -> int | None:
    """The ViT patch size of a trunk or encoder (None for conv nets)."""
    size = getattr(backbone, "patch_size", None)
    return int(size) if isinstance(size, int) and size > 0 else None


def as_encoder(backbone: nn.Module, views: MultiCropAugment, name: str) -> Encoder:
    """The method's backbone as an `Encoder`: a plain trunk is wrapped in a `BackboneEncoder`
    with the evaluation transform matching ``views``; an `Encoder` is used as it is."""
    if isinstance(backbone, Encoder):
        return backbone
    return BackboneEncoder(backbone, eval_transform_for(views), name=name)


def first_conv_in_channels(module: nn.Module) -> int | None:
    """Input channels of the first convolution (ResNet/small-CNN stem, ViT patch embedding)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return None


def check_backbone(backbone: nn.Module, *, in_chans: int, method: str) -> int:
    """The backbone must expose ``embed_dim`` and take ``in_chans`` input channels."""
    embed_dim = getattr(backbone, "embed_dim", None)
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise MethodConfigError(f"{method}: the backbone must have an integer `embed_dim` attribute "
                                "(build it with deepclust.models.backbones.build_backbone)")
    got = first_conv_in_channels(backbone)
    if got is not None and got != in_chans:
        hint = (" (Sobel input has 2 channels: build the backbone with in_chans=2)" if in_chans == 2
                else " (turn Sobel off, or build the backbone with in_chans=2)")
        raise MethodConfigError(f"{method}: the views have {in_chans} channels but the backbone "
                                f"expects {got}{hint}")
    return embed_dim


def forward_by_resolution(model: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """Run ``model`` once per run of consecutive same-size views (as SwAV/DINO do, so that
    BatchNorm sees each resolution as one batch); returns the outputs concatenated in view
    order, ``(V*B, ...)``."""
    outputs, start = [], 0
    while start < len(views):
        end = start + 1
        while end < len(views) and views[end].shape[-2:] == views[start].shape[-2:]:
            end += 1
        outputs.append(model(torch.cat(views[start:end])))
        start = end
    return torch.cat(outputs)


def default_local_size(img_size: int) -> int:
    """Local crop side for a working size: 96/224 of it (DINO's ratio), at least 4 px."""
    return max(4, round(img_size * 96 / 224))


__all__ = ["MethodConfigError", "align_to_patch", "as_encoder", "build_views", "check_backbone",
           "default_local_size", "eval_transform_for", "first_conv_in_channels",
           "forward_by_resolution", "patch_size_of"]
