"""Build the method (backbone + head + loss) that a TrainConfig describes.

`cfg.method` is a registered name (`deepclust.methods.build_method`) or, for custom
methods, "package.module:factory" where `factory(cfg) -> Method` (cfg.image_size is the
store's working size by then). Used by the loop and by trained-run feature extraction.
"""

from __future__ import annotations

import importlib

from torch import nn

from deepclust.errors import DeepclustError
from deepclust.train.config import TrainConfig


def build_method_from_config(cfg: TrainConfig) -> nn.Module:
    if ":" in cfg.method:
        module_name, attr = cfg.method.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise DeepclustError(f"cannot import method factory {cfg.method!r}: {exc}") from exc
        method = factory(cfg)
    else:
        try:
            from deepclust.methods import build_method
            from deepclust.models.backbones import build_backbone
        except ImportError as exc:
            raise DeepclustError(f"the methods/backbones of this deepclust install cannot be imported: {exc}") from exc
        backbone = build_backbone(cfg.backbone, in_chans=3, img_size=cfg.image_size, **cfg.backbone_kwargs)
        method = build_method(cfg.method, backbone, k=cfg.k, img_size=cfg.image_size, **cfg.method_kwargs)
    if cfg.freeze_last_layer_epochs is not None:
        method.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    return method
