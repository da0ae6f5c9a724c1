"""Build the method (encoder + heads + losses) that a TrainConfig describes, and load a
trained run back.

`cfg.method` is a registered name (`deepclust.methods.build_method`) or, for custom
methods, "package.module:factory" where `factory(cfg) -> Method` (cfg.image_size is the
store's working size by then). Importing a module runs its code, and a run folder's
config.json or a shared recipe names the module, so custom factories are imported only with
``trust_custom_code=True`` (CLI: ``--trust-custom-code``), like Hugging Face's
``trust_remote_code``; otherwise a `DeepclustError` says so and nothing is imported. The backbone trunk comes from
`deepclust.models.backbones.build_backbone`; the method wraps it in a `BackboneEncoder`
with the evaluation transform that matches its views (size, normalisation, Sobel), so
``method.encoder()`` is a plain `Encoder`.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path

import torch

from deepclust.errors import DeepclustError, ModelNotAvailableError
from deepclust.methods.base import Method
from deepclust.train.checkpoint import CONFIG_FILE, MODEL_FILE, find_checkpoint, load_model_tensors
from deepclust.train.config import TrainConfig

log = logging.getLogger("deepclust.train")


def build_method_from_config(cfg: TrainConfig, *, trust_custom_code: bool = False,
                             init_weights: bool = True) -> Method:
    """The method `cfg` describes. With ``cfg.init`` (resolved by
    `deepclust.train.init_from.resolve_init`) and ``init_weights``, the trunk gets SPEC's weights
    before the method copies it into its teacher; a resumed or reloaded run passes
    ``init_weights=False`` (its checkpoint holds the weights). ``freeze_blocks`` is applied here."""
    from deepclust.train.init_from import freeze_first_blocks, init_summary, load_init_weights

    if ":" in cfg.method:
        if not trust_custom_code:
            raise DeepclustError(
                f"method {cfg.method!r} is custom code (module:factory): importing it would run that module. "
                "Only if you trust its source, pass --trust-custom-code (Python: trust_custom_code=True); "
                "registered methods need no flag")
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
        if cfg.init and init_weights:
            log.info(init_summary(cfg))
            load_init_weights(trunk, cfg.init)
        method = build_method(cfg.method, trunk, k=cfg.k, img_size=cfg.image_size, **cfg.method_kwargs)
    if cfg.freeze_last_layer_epochs is not None:
        method.freeze_last_layer_epochs = cfg.freeze_last_layer_epochs
    freeze_first_blocks(method, cfg.freeze_blocks)
    return method


def load_trained_method(run_dir: str | Path, device: str = "cpu", *,
                        trust_custom_code: bool = False) -> tuple[Method, TrainConfig]:
    """Rebuild the method of a run directory from the config.json of its checkpoint (read
    once) and load its model.safetensors (safetensors only, never pickle), through the one
    checkpoint reader (`checkpoint.find_checkpoint`). Returns (method in eval mode on
    `device`, its config)."""
    run_dir = Path(run_dir)
    found = find_checkpoint(run_dir)
    if found is None:
        raise ModelNotAvailableError(
            f"{run_dir} is not a training run directory (no checkpoint); train one with `deepclust train`")
    gen, state = found
    try:
        cfg = TrainConfig.from_dict(json.loads((gen / CONFIG_FILE).read_text()))
    except DeepclustError as exc:
        raise ModelNotAvailableError(f"{gen / CONFIG_FILE} is not a valid run config: {exc}") from exc
    method = build_method_from_config(cfg, trust_custom_code=trust_custom_code, init_weights=False)
    load_model_tensors(method, gen / MODEL_FILE, state.get("method_extra", {}))
    return method.to(torch.device(device)).eval(), cfg
