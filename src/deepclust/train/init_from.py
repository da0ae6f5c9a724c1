"""``--init SPEC``: continue self-supervised training from a pretrained backbone (domain adaptation).

SPEC is what `deepclust.features.load_model` calls ``hf`` (``hf:<hub id or folder>``, or a
Hugging Face folder recognised by its config.json) or ``run`` (a deepclust run directory).

* `resolve_init(cfg, given)` makes a config self-contained before anything is built: the
  backbone becomes SPEC's architecture (``backbone: vit`` with every size in
  ``backbone_kwargs`` for a Hugging Face DINOv2 / CLIP tower; the run's own backbone for a
  run), the working size (unless given) and the views' mean/std (unless the recipe sets
  ``augment.mean``) come from SPEC's configs, and every adaptation knob left at None gets
  its default below. It is idempotent, so resuming or reloading a run never needs SPEC again:
  the weights come from the run's checkpoint (`load_init_weights` runs for a new run only).
* `load_init_weights(trunk, spec)` copies SPEC's backbone weights into the freshly built
  trunk *before* the method deep-copies it into its teacher, so student and teacher start
  equal to SPEC (heads, optimiser state and the schedule's position start fresh: a run as
  SPEC gives its evaluated encoder, DINO's teacher backbone, and nothing else).
* `warm_up_heads` (`deepclust.train.init_warmup`) trains the fresh heads for a few steps on the
  frozen backbone before step 0.

Defaults when ``init`` is set (each overridable with ``--set KEY=VALUE``):

* ``init_lr_scale: 0.1``: the pretrained weights are near a good solution; a tenth of the
  from-scratch learning rate keeps the first steps from destroying them.
* ``layer_decay: 0.9``: BEiT's layer-wise decay (block i of a depth-d ViT learns at
  ``lr * 0.9 ** (d - i)``, the embeddings at ``0.9 ** (d + 1)``, the final norm and heads at
  ``lr``): early, generic layers move least. Milder than fine-tuning's 0.65-0.75 because the
  whole network keeps training self-supervised. 1 (none) for a conv-net run as SPEC.
* ``freeze_blocks: 0`` (freeze the patch embedding and the first N blocks when set).
* ``freeze_last_layer_epochs: 1`` (DINO's last head layer fixed during the first epoch).
* ``init_head_warmup_steps: 50`` for methods with a teacher head (DINO, iBOT, DINOv2).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepclust.errors import DeepclustError, ModelNotAvailableError
from deepclust.train.config import TrainConfig

log = logging.getLogger("deepclust.train")

INIT_LR_SCALE = 0.1
INIT_LAYER_DECAY = 0.9
INIT_FREEZE_LAST_LAYER_EPOCHS = 1
INIT_HEAD_WARMUP_STEPS = 50


@dataclass
class InitSource:
    """What SPEC dictates: its kind (``hf`` / ``run``), backbone name and architecture
    keywords, working size and normalisation (None: keep the method's)."""

    kind: str
    backbone: str
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int | None = None
    mean: list[float] | str | None = None
    std: list[float] | None = None


def init_kind(spec: str) -> str:
    """``hf`` or ``run`` by the rules of `deepclust.features.load_model`; a clear error otherwise."""
    from deepclust.models.pretrained.hf import is_hf_model_dir
    from deepclust.train.checkpoint import has_checkpoint_files

    text = str(spec).strip()
    if text.startswith("hf:") or is_hf_model_dir(text):
        return "hf"
    if Path(text).is_dir() and has_checkpoint_files(text):
        return "run"
    raise DeepclustError(f"--init {text!r}: not a model to start from; give hf:<hub id or folder>, a Hugging Face "
                         "DINOv2 / CLIP folder, or a deepclust run directory")


def describe_init(spec: str) -> InitSource:
    """SPEC's architecture and preprocessing, from its configuration files (no weights read)."""
    if init_kind(spec) == "hf":
        from deepclust.models.pretrained.to_trainable import hf_vit_spec

        hf = hf_vit_spec(spec)
        return InitSource("hf", "vit", dict(hf.vit_kwargs), hf.image_size, list(hf.mean), list(hf.std))
    from deepclust.train.checkpoint import read_config

    run = TrainConfig.from_dict(read_config(spec))
    augment = dict(run.method_kwargs.get("augment") or {})
    kwargs = dict(run.backbone_kwargs)
    if run.backbone in ("vit", "vit_tiny", "vit_small"):
        # the run's patch size and position-embedding grid follow its working size: pin them, so
        # the continued run may use another size (position embeddings are interpolated)
        from deepclust.models.backbones import default_patch_size

        kwargs.setdefault("patch_size", default_patch_size(int(run.image_size)))
        kwargs.setdefault("pos_embed_size", int(run.image_size))
    return InitSource("run", run.backbone, kwargs, int(run.image_size), augment.get("mean"), augment.get("std"))


def _merge_backbone(cfg: TrainConfig, src: InitSource, given: Collection[str]) -> tuple[str, dict[str, Any]]:
    if "backbone" in given and cfg.backbone != src.backbone:
        raise DeepclustError(f"--init {cfg.init}: its backbone is {src.backbone!r} but --backbone {cfg.backbone!r} "
                             "was asked for (mismatched backbone); drop --backbone: with --init the backbone is "
                             "the model's own")
    kwargs = dict(cfg.backbone_kwargs) if cfg.backbone == src.backbone else {}
    clash = sorted(k for k in src.backbone_kwargs if k in kwargs and kwargs[k] != src.backbone_kwargs[k])
    if clash and "backbone_kwargs" in given:
        raise DeepclustError(f"--init {cfg.init}: backbone_kwargs {clash} differ from the model's own "
                             f"({ {k: src.backbone_kwargs[k] for k in clash} }; mismatched backbone)")
    kwargs.update(src.backbone_kwargs)
    return src.backbone, kwargs


def _method_accepts_augment(cfg: TrainConfig) -> bool:
    from deepclust.methods import METHODS, method_kwargs_accepted

    key = cfg.method.lower().replace("-", "_")
    return key in METHODS and "augment" in method_kwargs_accepted(key)


def resolve_init(cfg: TrainConfig, given: Collection[str] = ()) -> TrainConfig:
    """``cfg`` with SPEC's architecture, size and normalisation and the adaptation defaults
    filled in (see the module docstring); ``given``: config keys the user set explicitly
    (flags, ``--set``), which SPEC's defaults never replace. Without ``init``, ``cfg`` itself
    (its knobs left at None mean: off)."""
    if not cfg.init:
        return cfg
    d = cfg.to_dict()
    if ":" in cfg.method:
        raise DeepclustError("--init needs a registered method (its backbone is built by deepclust); a custom "
                             "module:factory method builds its own")
    src = describe_init(cfg.init)
    d["backbone"], d["backbone_kwargs"] = _merge_backbone(cfg, src, given)
    if src.image_size and "image_size" not in given:
        d["image_size"] = int(src.image_size)
    if src.mean is not None and _method_accepts_augment(cfg):
        kwargs = dict(cfg.method_kwargs)
        augment = dict(kwargs.get("augment") or {})
        if "mean" not in augment:  # a list with its std, or a run's named normalisation ("cifar10")
            augment["mean"] = src.mean if isinstance(src.mean, str) else list(src.mean)
            if src.std is not None:
                augment["std"] = list(src.std)
            kwargs["augment"] = augment
        d["method_kwargs"] = kwargs
    vit = d["backbone"].startswith("vit")  # layer-wise decay is defined for a ViT's blocks
    for key, default in (("init_lr_scale", INIT_LR_SCALE), ("layer_decay", INIT_LAYER_DECAY if vit else 1.0),
                         ("freeze_last_layer_epochs", INIT_FREEZE_LAST_LAYER_EPOCHS),
                         ("init_head_warmup_steps", INIT_HEAD_WARMUP_STEPS)):
        if d[key] is None:
            d[key] = default
    return TrainConfig.from_dict(d)


def init_summary(cfg: TrainConfig) -> str:
    """One line stating the values an --init run uses (logged at its start)."""
    size = cfg.backbone_kwargs.get("embed_dim"), cfg.backbone_kwargs.get("depth"), cfg.backbone_kwargs.get("patch_size")
    augment = cfg.method_kwargs.get("augment") or {}
    return (f"init from {cfg.init}: backbone {cfg.backbone} (embed_dim, depth, patch) = {size}, "
            f"image_size {cfg.image_size}, mean {augment.get('mean', 'method default')}, "
            f"std {augment.get('std', 'method default')}; lr x {cfg.init_lr_scale}, layer_decay {cfg.layer_decay}, "
            f"freeze_blocks {cfg.freeze_blocks}, last layer frozen {cfg.freeze_last_layer_epochs} epoch(s), "
            f"head warm-up {cfg.init_head_warmup_steps} steps")


def load_init_weights(trunk: nn.Module, spec: str) -> None:
    """Copy SPEC's backbone weights into ``trunk`` (built from the resolved config)."""
    if init_kind(spec) == "hf":
        from deepclust.models.backbones import VisionTransformer
        from deepclust.models.pretrained.to_trainable import load_hf_into_vit

        if not isinstance(trunk, VisionTransformer):
            raise DeepclustError(f"--init {spec}: a Hugging Face tower loads into a ViT, not a {type(trunk).__name__} "
                                 "(mismatched backbone)")
        load_hf_into_vit(spec, trunk)
        return
    _load_run_backbone(trunk, spec)


def _load_run_backbone(trunk: nn.Module, run_dir: str) -> None:
    """The evaluated encoder of a run (DINO: the teacher backbone) into ``trunk``; only weights,
    never its heads or optimiser state. The run's method code is not imported for custom methods."""
    from deepclust.train.builder import load_trained_method

    method, _ = load_trained_method(run_dir)
    source = getattr(method.encoder(), "trunk", None)
    if source is None:
        raise DeepclustError(f"--init {run_dir}: its encoder has no trainable trunk to start from")
    state = {k: v for k, v in source.state_dict().items() if k != "mask_token"}  # iBOT's, created on demand
    target = trunk.state_dict()
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    shapes = sorted(k for k in set(state) & set(target) if state[k].shape != target[k].shape)
    if missing or unexpected or shapes:
        raise ModelNotAvailableError(
            f"--init {run_dir}: its backbone does not fit this run's (mismatched backbone): missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, different shapes {shapes[:5]}")
    with torch.no_grad():
        trunk.load_state_dict(state, strict=True)


def freeze_first_blocks(method: nn.Module, n_blocks: int) -> list[str]:
    """Freeze the student ViT's patch embedding, tokens, position embeddings and first
    ``n_blocks`` blocks (``requires_grad=False``: no optimiser state, DDP ignores them);
    returns the frozen parameter names."""
    if n_blocks <= 0:
        return []
    trunk = getattr(getattr(method, "backbone", None), "trunk", None)
    blocks = getattr(trunk, "blocks", None)
    if trunk is None or blocks is None:
        raise DeepclustError("freeze_blocks needs a ViT backbone (vit, vit_tiny, vit_small or --init of a ViT)")
    if n_blocks > len(blocks):
        raise DeepclustError(f"freeze_blocks={n_blocks} but the ViT has {len(blocks)} blocks")
    frozen = []
    for name, p in trunk.named_parameters():
        parts = name.split(".")
        early = parts[0] in ("patch_embed", "cls_token", "pos_embed", "register_tokens", "pre_norm")
        if early or (parts[0] == "blocks" and int(parts[1]) < n_blocks):
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


__all__ = ["INIT_GIVEN", "INIT_HEAD_WARMUP_STEPS", "INIT_LAYER_DECAY", "INIT_LR_SCALE", "InitSource", "describe_init",
           "freeze_first_blocks", "init_kind", "init_summary", "load_init_weights", "resolve_init"]

#: What `train()` treats as given when it resolves a config itself (library use; the CLI and
#: the estimator resolve first with what their user set): every field but the backbone's, so
#: only the architecture and the knobs left at None are filled in.
INIT_GIVEN = frozenset(f.name for f in dataclasses.fields(TrainConfig)) - {"backbone", "backbone_kwargs"}
