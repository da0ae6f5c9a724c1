"""Pretrained foundation models (DINOv2, CLIP) from Hugging Face, as `Encoder` modules.

``load_pretrained("hf:facebook/dinov2-small")`` (or a ``save_pretrained`` folder, with or
without the ``hf:`` prefix) -> a :class:`PretrainedEncoder` (an ``nn.Module``: frozen, eval
mode; ``requires_grad_(True)`` to fine-tune it); CLIP models also give text features
(:class:`ClipEncoder`). ``transformers`` is an optional extra, imported only here, lazily:
without it a :class:`~deepclust.errors.ModelNotAvailableError` says
``pip install 'deepclust[pretrained]'``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepclust.errors import ModelNotAvailableError
from deepclust.models.pretrained.clip import ClipEncoder
from deepclust.models.pretrained.dinov2 import Dinov2Encoder
from deepclust.models.pretrained.encoder import POOLINGS, PretrainedEncoder, check_pooling
from deepclust.models.pretrained.hf import (
    check_weights,
    is_hf_model_dir,
    model_type,
    read_json,
    require_transformers,
    resolve_model_dir,
    strip_prefix,
)
from deepclust.models.pretrained.preprocess import ImagePreprocess

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("dinov2", "dinov2_with_registers", "clip")

# Loading a ViT-B takes seconds; the Hugging Face modules (and tokenizers) loaded in this
# process are shared by the encoders built on them. Pass ``shared=False`` for a private copy
# (fine-tuning).
_LOADED: dict[tuple[str, str, bool], tuple[nn.Module, Any]] = {}


def _processor_for(model_dir: Path, image_size: int) -> ImagePreprocess:
    cfg_path = model_dir / "preprocessor_config.json"
    if cfg_path.is_file():
        return ImagePreprocess.from_config(read_json(cfg_path))
    log.warning("%s has no preprocessor_config.json; using %d px with ImageNet mean/std",
                model_dir, image_size)
    return ImagePreprocess(shortest_edge=image_size, crop_hw=(image_size, image_size))


def load_pretrained(spec: str, *, device: str | torch.device = "cpu", attentions: bool = False,
                    resolution: int | None = None, pooling: str = "cls", shared: bool = True
                    ) -> PretrainedEncoder:
    """Load ``hf:<hub id or folder>`` (or a folder) as a frozen `PretrainedEncoder`.

    Args:
        spec: ``hf:facebook/dinov2-small``, ``hf:openai/clip-vit-base-patch32``,
            ``hf:/path/to/folder`` or ``/path/to/folder`` (``save_pretrained`` layout).
        device: where the model runs.
        attentions: load with eager attention so attention weights can be returned
            (attention maps); the default uses the faster fused attention.
        resolution: run at this square resolution instead of the processor's crop size
            (e.g. 112 for speed on a CPU; DINOv2 and CLIP interpolate position embeddings).
        pooling: ``cls``, ``mean`` or ``both`` (see `PretrainedEncoder`).
        shared: reuse the module already loaded in this process (else load a private copy).

    Raises:
        ModelNotAvailableError: transformers missing, model not found/cached/downloadable,
            unsupported model type, or unreadable weights.
    """
    check_pooling(pooling)
    device = torch.device(device)
    name = strip_prefix(spec)
    model_dir = resolve_model_dir(spec)
    key = (str(model_dir), str(device), bool(attentions))
    if shared and key in _LOADED:
        model, tokenizer = _LOADED[key]
    else:
        model, tokenizer = _load(name, model_dir, device, attentions)
        if shared:
            _LOADED[key] = (model, tokenizer)
    return _wrap(spec, model, tokenizer, model_dir, resolution, pooling)


def _wrap(spec: str, model: nn.Module, tokenizer: Any, model_dir: Path, resolution: int | None,
          pooling: str) -> PretrainedEncoder:
    config: Any = model.config
    if model_type(model_dir) == "clip":
        vision = config.vision_config
        processor = _processor_for(model_dir, int(vision.image_size))
        if resolution is not None:
            processor = processor.with_resolution(int(resolution))
        return ClipEncoder(spec, model, processor, patch_size=int(vision.patch_size), num_prefix_tokens=1,
                           model_dir=model_dir, pooling=pooling, cls_dim=int(config.projection_dim),
                           patch_dim=int(vision.hidden_size), tokenizer=tokenizer)
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    processor = _processor_for(model_dir, int(config.image_size))
    if resolution is not None:
        processor = processor.with_resolution(int(resolution))
    return Dinov2Encoder(spec, model, processor, patch_size=int(config.patch_size),
                         num_prefix_tokens=1 + registers, model_dir=model_dir, pooling=pooling,
                         cls_dim=int(config.hidden_size), patch_dim=int(config.hidden_size))


def _load(name: str, model_dir: Path, device: torch.device, attentions: bool) -> tuple[nn.Module, Any]:
    transformers = require_transformers()
    mtype = model_type(model_dir)
    if mtype not in SUPPORTED_TYPES:
        raise ModelNotAvailableError(
            f"model '{name}' has model_type '{mtype or 'unknown'}'; supported: "
            f"{', '.join(SUPPORTED_TYPES)} (DINOv2 and CLIP checkpoints)")
    check_weights(model_dir, name)
    kwargs: dict[str, Any] = {"use_safetensors": True}
    if attentions:
        kwargs["attn_implementation"] = "eager"
    classes = {"clip": "CLIPModel", "dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel"}
    try:
        model = getattr(transformers, classes[mtype]).from_pretrained(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - corrupt or incompatible files
        raise ModelNotAvailableError(
            f"could not load model '{name}' from {model_dir}: {type(exc).__name__}: {exc}") from exc
    model.requires_grad_(False)
    model.to(device).eval()
    tokenizer = _load_tokenizer(transformers, model_dir) if mtype == "clip" else None
    return model, tokenizer


def _load_tokenizer(transformers: Any, model_dir: Path) -> Any:
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotAvailableError(f"could not load the tokenizer in {model_dir}: {exc}") from exc


def load_clip(spec: str, *, device: str | torch.device = "cpu", attentions: bool = False) -> ClipEncoder:
    """Like :func:`load_pretrained` but insists on a CLIP model (zero-shot, naming)."""
    encoder = load_pretrained(spec, device=device, attentions=attentions)
    return require_clip(encoder, spec)


def require_clip(encoder: object, spec: str) -> ClipEncoder:
    """``encoder`` when it is a CLIP model (or a trained image-text run's encoder, which has the
    same ``text_features`` / ``logit_scale`` / ``embed``), else a clear error."""
    if not isinstance(encoder, ClipEncoder) and not callable(getattr(encoder, "text_features", None)):
        kind = getattr(encoder, "kind", type(encoder).__name__)
        raise ModelNotAvailableError(
            f"'{spec}' is a {kind} model; zero-shot classification and cluster naming "
            f"need a CLIP model such as hf:openai/clip-vit-base-patch32 (or a run trained with "
            f"--method clip|align|unicl)")
    return encoder  # type: ignore[return-value]  # a ClipEncoder, or an encoder with its interface


__all__ = ["POOLINGS", "PretrainedEncoder", "Dinov2Encoder", "ClipEncoder", "ImagePreprocess",
           "load_pretrained", "load_clip", "require_clip", "is_hf_model_dir",
           "resolve_model_dir"]
