"""Pretrained foundation models (DINOv2, CLIP) from Hugging Face, as frozen encoders.

``load_pretrained("hf:facebook/dinov2-small")`` -> a :class:`PretrainedEncoder` with
``embed(images_uint8, pooling=...)``; CLIP models also give text features
(:class:`ClipEncoder`). ``transformers`` is an optional extra, imported only here, lazily:
without it a :class:`~deepclust.errors.ModelNotAvailableError` says
``pip install 'deepclust[pretrained]'``.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch

from deepclust.errors import ModelNotAvailableError
from deepclust.models.pretrained.clip import ClipEncoder
from deepclust.models.pretrained.dinov2 import Dinov2Encoder
from deepclust.models.pretrained.encoder import POOLINGS, PretrainedEncoder
from deepclust.models.pretrained.hf import (check_weights, model_type, read_json,
                                            require_transformers, resolve_model_dir, strip_prefix)
from deepclust.models.pretrained.preprocess import ImagePreprocess

log = logging.getLogger(__name__)

SUPPORTED_TYPES = ("dinov2", "dinov2_with_registers", "clip")

# Loading a ViT-B takes seconds; naming, zero-shot and clustering in one process share it.
_LOADED: dict[tuple[str, str, bool], PretrainedEncoder] = {}


def is_pretrained_spec(spec: str) -> bool:
    return isinstance(spec, str) and spec.startswith("hf:")


def _preprocess_for(model_dir: Path, image_size: int) -> ImagePreprocess:
    cfg_path = model_dir / "preprocessor_config.json"
    if cfg_path.is_file():
        return ImagePreprocess.from_config(read_json(cfg_path))
    log.warning("%s has no preprocessor_config.json; using %d px with ImageNet mean/std",
                model_dir, image_size)
    return ImagePreprocess(shortest_edge=image_size, crop_hw=(image_size, image_size))


def load_pretrained(spec: str, *, device: str | torch.device = "cpu", attentions: bool = False,
                    resolution: int | None = None) -> PretrainedEncoder:
    """Load ``hf:<hub id or folder>`` as a frozen encoder (cached per process).

    Args:
        spec: ``hf:facebook/dinov2-small``, ``hf:openai/clip-vit-base-patch32``,
            ``hf:/path/to/save_pretrained/folder``.
        device: where the model runs.
        attentions: load with eager attention so attention weights can be returned
            (attention maps); the default uses the faster fused attention.
        resolution: run at this square resolution instead of the processor's crop size
            (e.g. 112 for speed on a CPU; DINOv2 and CLIP interpolate position embeddings).

    Raises:
        ModelNotAvailableError: transformers missing, model not found/cached/downloadable,
            unsupported model type, or unreadable weights.
    """
    device = torch.device(device)
    name = strip_prefix(spec)
    model_dir = resolve_model_dir(spec)
    key = (str(model_dir), str(device), bool(attentions))
    if key in _LOADED:
        encoder = _LOADED[key]
    else:
        encoder = _load(name, model_dir, device, attentions)
        _LOADED[key] = encoder
    if resolution is not None:
        # A shallow copy so the cached encoder keeps its own preprocessing.
        encoder = copy.copy(encoder)
        encoder.preprocess = encoder.preprocess.with_resolution(int(resolution))
    return encoder


def _load(name: str, model_dir: Path, device: torch.device, attentions: bool) -> PretrainedEncoder:
    transformers = require_transformers()
    mtype = model_type(model_dir)
    if mtype not in SUPPORTED_TYPES:
        raise ModelNotAvailableError(
            f"model '{name}' has model_type '{mtype or 'unknown'}'; supported: "
            f"{', '.join(SUPPORTED_TYPES)} (DINOv2 and CLIP checkpoints)")
    check_weights(model_dir, name)
    kwargs = {"use_safetensors": True}
    if attentions:
        kwargs["attn_implementation"] = "eager"
    try:
        if mtype == "clip":
            model = transformers.CLIPModel.from_pretrained(str(model_dir), **kwargs)
        elif mtype == "dinov2":
            model = transformers.Dinov2Model.from_pretrained(str(model_dir), **kwargs)
        else:
            model = transformers.Dinov2WithRegistersModel.from_pretrained(str(model_dir), **kwargs)
    except Exception as exc:  # noqa: BLE001 - corrupt or incompatible files
        raise ModelNotAvailableError(
            f"could not load model '{name}' from {model_dir}: {type(exc).__name__}: {exc}") from exc
    model.requires_grad_(False)
    model.to(device).eval()
    config = model.config
    if mtype == "clip":
        vision = config.vision_config
        preprocess = _preprocess_for(model_dir, int(vision.image_size))
        tokenizer = _load_tokenizer(transformers, model_dir)
        return ClipEncoder(f"hf:{name}", model, preprocess, patch_size=int(vision.patch_size),
                           device=device, num_prefix_tokens=1, model_dir=model_dir,
                           tokenizer=tokenizer)
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    preprocess = _preprocess_for(model_dir, int(config.image_size))
    return Dinov2Encoder(f"hf:{name}", model, preprocess, patch_size=int(config.patch_size),
                         device=device, num_prefix_tokens=1 + registers, model_dir=model_dir)


def _load_tokenizer(transformers, model_dir: Path):
    if not any((model_dir / f).is_file() for f in ("tokenizer.json", "vocab.json")):
        return None
    try:
        return transformers.AutoTokenizer.from_pretrained(str(model_dir))
    except Exception as exc:  # noqa: BLE001
        raise ModelNotAvailableError(f"could not load the tokenizer in {model_dir}: {exc}") from exc


def load_clip(spec: str, *, device: str | torch.device = "cpu") -> ClipEncoder:
    """Like :func:`load_pretrained` but insists on a CLIP model (zero-shot, naming)."""
    encoder = load_pretrained(spec, device=device)
    if not isinstance(encoder, ClipEncoder):
        raise ModelNotAvailableError(
            f"'{spec}' is a {encoder.kind} model; zero-shot classification and cluster naming "
            f"need a CLIP model such as hf:openai/clip-vit-base-patch32")
    return encoder


__all__ = ["POOLINGS", "PretrainedEncoder", "Dinov2Encoder", "ClipEncoder", "ImagePreprocess",
           "load_pretrained", "load_clip", "is_pretrained_spec", "resolve_model_dir"]

# Importing this package makes `extract_features` understand "hf:..." specs.
import deepclust.features.pretrained  # noqa: E402,F401
