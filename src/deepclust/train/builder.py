"""Build the method (encoder + heads + losses) that a TrainConfig describes, and load a
trained run back.

`cfg.method` is a registered name (`deepclust.methods.build_method`) or, for custom
methods, "package.module:factory" where `factory(cfg) -> Method` (cfg.image_size is the
store's working size by then). The backbone trunk comes from
`deepclust.models.backbones.build_backbone`; the method wraps it in a `BackboneEncoder`
with the evaluation transform that matches its views (size, normalisation, Sobel), so
``method.encoder()`` is a plain `Encoder`.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from deepclust.errors import DeepclustError, ModelNotAvailableError
from deepclust.methods.base import Method
from deepclust.train.checkpoint import CONFIG_FILE, MODEL_FILE, STATE_FILE, load_model_tensors
from deepclust.train.config import TrainConfig


def build_method_from_config(cfg: TrainConfig) -> Method:
    if ":" in cfg.method:
        module_name, attr = cfg.method.split(":", 1)
        try:
            factory = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise DeepclustError(f"cannot import method factory {cfg.method!r}: {exc}") from exc
        method = factory(cfg)
    else:
        from deepclust.methods import build_method, method_in_chans
        from deepclust.models.backbones import build_backbone

        in_chans = method_in_chans(cfg.method, **cfg.method_kwargs)  # 2 for DeepCluster's Sobel input
        trunk = build_backbone(cfg.backbone, in_chans=in_chans, img_size=cfg.image_size, **cfg.backbone_kwargs)
        method = build_method(cfg.method, trunk, k=cfg.k, img_size=cfg.image_size, **cfg.method_kwargs)
    if cfg.freeze_last_layer_epochs is not None:
        method.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    return method


def load_trained_method(run_dir: str | Path, device: str = "cpu") -> tuple[Method, TrainConfig]:
    """Rebuild the method of a run directory from its config.json (read once) and load
    model.safetensors (safetensors only, never pickle). Returns (method in eval mode on
    `device`, its config)."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).is_file() or not (run_dir / CONFIG_FILE).is_file():
        raise ModelNotAvailableError(
            f"{run_dir} is not a training run directory (it needs {MODEL_FILE} and {CONFIG_FILE}); "
            "train one with `deepclust train`")
    cfg = TrainConfig.from_dict(json.loads((run_dir / CONFIG_FILE).read_text()))
    method = build_method_from_config(cfg)
    state = {}
    if (run_dir / STATE_FILE).is_file():
        state = json.loads((run_dir / STATE_FILE).read_text()).get("method_extra", {})
    load_model_tensors(method, run_dir / MODEL_FILE, state)
    return method.to(torch.device(device)).eval(), cfg
