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
            from deepclust.methods import build_method, method_in_chans
            from deepclust.models.backbones import build_backbone
        except ImportError as exc:
            raise DeepclustError(f"the methods/backbones of this deepclust install cannot be imported: {exc}") from exc
        in_chans = method_in_chans(cfg.method, **cfg.method_kwargs)  # 2 for DeepCluster's Sobel input
        backbone = build_backbone(cfg.backbone, in_chans=in_chans, img_size=cfg.image_size, **cfg.backbone_kwargs)
        method = build_method(cfg.method, backbone, k=cfg.k, img_size=cfg.image_size, **cfg.method_kwargs)
    if cfg.freeze_last_layer_epochs is not None:
        method.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    return method


def load_trained_method(run_dir, device: str = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the method of a run directory from config.json and load model.safetensors
    (safetensors only, never pickle). Returns (method in eval mode on `device`, its config)."""
    import json
    from pathlib import Path

    import torch

    from deepclust.errors import ModelNotAvailableError
    from deepclust.train.checkpoint import CONFIG_FILE, MODEL_FILE, load_model_tensors

    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise ModelNotAvailableError(
            f"{run_dir} is not a training run directory (it needs {MODEL_FILE} and {CONFIG_FILE}); "
            "train one with `deepclust train`")
    cfg = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    method = build_method_from_config(cfg)
    state = {}
    if (run_dir / "state.json").is_file():
        state = json.loads((run_dir / "state.json").read_text()).get("method_extra", {})
    load_model_tensors(method, run_dir / MODEL_FILE, state)
    return method.to(torch.device(device)).eval(), cfg
