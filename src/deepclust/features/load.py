"""`load_model`: the one loader. Any model spec -> a `LoadedModel` holding an `Encoder`.

Specs, tried in this order:

* ``"raw"`` / ``"pca"``: pixel baselines (`PixelEncoder`, `PCAEncoder`, fitted on the store
  when it is embedded); they need the store's working size (``image_size``);
* ``"hf:<hub id or folder>"``: a Hugging Face DINOv2 / CLIP model;
* a folder whose ``config.json`` has ``model_type`` / ``architectures`` (written by
  ``save_pretrained`` or ``hf download --local-dir``): the same, without the prefix;
* a training run directory (``config.json`` + ``model.safetensors``): the method is rebuilt
  once (`deepclust.train.builder.load_trained_method`, config.json read once) and gives its
  encoder (``method.encoder()``), its k-way cluster head (``method.cluster_head()``) and the
  run's `TrainConfig` (working size, ``cluster_whiten_dim``);
* an ``nn.Module`` given from Python: an `Encoder` as is, any other module with an integer
  ``embed_dim`` wrapped in a `BackboneEncoder` on ``[0, 1]`` pixels.

The ``identity`` of a `LoadedModel` names what its embeddings depend on (the spec, the
weights' size and modification time, the options), so the embedding cache
(`deepclust.features.embed.embed_store`) is keyed by store + identity + options; a module
given from Python has none and is never cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepclust.core.device import resolve_device
from deepclust.errors import DeepclustError
from deepclust.models.encoder import BackboneEncoder, Encoder, PCAEncoder, PixelEncoder

log = logging.getLogger(__name__)

#: What `load_model` understands, for error messages.
MODEL_KINDS = ("raw", "pca", "hf:<model id or dir>", "<Hugging Face model folder>", "<training run dir>")
#: Working-size caps of the image store: pixels / trained models vs pretrained (224 px) models.
DEFAULT_MAX_SIZE = 96
PRETRAINED_MAX_SIZE = 224


@dataclass
class LoadedModel:
    """A loaded model and what goes with it.

    Attributes:
        spec: what was asked for (the string, or the module's name).
        kind: ``raw``, ``pca``, ``hf``, ``run`` or ``module``.
        encoder: the `Encoder` (eval mode, on the device).
        head: the run's k-way cluster head on encoder embeddings, or None.
        config: the run's `TrainConfig` (None for other kinds).
        identity: the cache identity (None: do not cache).
        image_size: the working size the encoder needs (runs: the size trained on), else None.
        method: the run's trained `Method` (None for other kinds).
    """

    spec: str
    kind: str
    encoder: Encoder
    head: nn.Module | None = None
    config: Any = None
    identity: str | None = None
    image_size: int | None = None
    method: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.encoder.device

    @property
    def max_size(self) -> int:
        """The largest working size worth decoding a source at for this model."""
        return PRETRAINED_MAX_SIZE if self.kind == "hf" else DEFAULT_MAX_SIZE

    @property
    def spherical(self) -> bool:
        return bool(self.encoder.spherical)

    @property
    def whiten_dim(self) -> int:
        return int(self.encoder.whiten_dim)


def is_run_dir(spec: object) -> bool:
    """A deepclust training run directory (checkpoint generations, see `train.checkpoint`, or
    the flat ``config.json`` + ``model.safetensors`` of earlier versions, refused on loading)."""
    from deepclust.models.pretrained.hf import is_hf_model_dir
    from deepclust.train.checkpoint import has_checkpoint_files

    if not isinstance(spec, (str, Path)):
        return False
    try:
        path = Path(spec)
        if not path.is_dir() or is_hf_model_dir(path):
            return False
        return has_checkpoint_files(path) or ((path / "model.safetensors").is_file()
                                              and (path / "config.json").is_file())
    except (OSError, ValueError):
        return False


def spec_kind(spec: object) -> str:
    """``raw``, ``pca``, ``hf``, ``run`` or ``module`` for a spec; DeepclustError otherwise."""
    from deepclust.models.pretrained.hf import is_hf_model_dir

    if isinstance(spec, nn.Module):
        return "module"
    if not isinstance(spec, (str, Path)) or not str(spec):
        raise DeepclustError(f"a model spec must be a non-empty string (raw, pca, hf:<id>, a folder) "
                             f"or an nn.Module, got {spec!r}")
    text = str(spec)
    if text in ("raw", "pca"):
        return text
    if text.startswith("hf:") or is_hf_model_dir(text):
        return "hf"
    if is_run_dir(text):
        return "run"
    path = Path(text)
    if path.is_dir() and (path / "config.json").is_file():
        raise DeepclustError(f"{text} has a config.json but is neither a training run (no model.safetensors) "
                             f"nor a Hugging Face model folder (no model_type in config.json)")
    raise DeepclustError(f"unknown model spec {text!r}: it is not an existing folder; valid kinds: "
                         f"{', '.join(MODEL_KINDS)}")


def load_model(
    spec: str | Path | nn.Module,
    *,
    device: str | torch.device | None = "auto",
    image_size: int | None = None,
    attentions: bool = False,
    pooling: str | None = None,
    resolution: int | None = None,
    pca_dim: int = 50,
    seed: int = 0,
    shared: bool = True,
    trust_custom_code: bool = False,
) -> LoadedModel:
    """Load ``spec`` once (see the module doc).

    Args:
        device: ``auto``, ``cpu``, ``cuda[:N]`` (`deepclust.core.device.resolve_device`).
        image_size: the store's working size (needed by ``raw`` and ``pca``).
        attentions: load Hugging Face models with eager attention (attention maps).
        pooling, resolution: Hugging Face models only (``cls``/``mean``/``both``; input size).
        pca_dim, seed: ``pca`` only.
        shared: Hugging Face models: share the module already loaded in this process (False:
            a private copy, e.g. to fine-tune it with ``encoder.requires_grad_(True)``).
        trust_custom_code: runs only: allow a ``module:factory`` method named by the run's
            config.json to be imported (it runs that module's code). Off: a clear refusal.
    """
    kind = spec_kind(spec)
    dev = resolve_device(device)
    if (pooling is not None or resolution is not None) and kind != "hf":
        raise DeepclustError("pooling and resolution apply to Hugging Face models (hf:...) only")
    if kind == "module":
        return _from_module(spec, dev)  # type: ignore[arg-type]
    text = str(spec)
    if kind in ("raw", "pca"):
        if image_size is None:
            raise DeepclustError(f"{text} features need the working image size (image_size=...)")
        encoder: Encoder = (PixelEncoder(image_size) if kind == "raw"
                            else PCAEncoder(image_size, int(pca_dim), seed=int(seed)))
        options = f"dim={pca_dim};whiten=True;seed={seed}" if kind == "pca" else ""
        return LoadedModel(text, kind, encoder.to(dev), identity=f"{kind}:{options}")
    if kind == "hf":
        return _from_hf(text, dev, attentions, pooling or "cls", resolution, shared)
    return _from_run(text, dev, trust_custom_code)


def _from_module(module: nn.Module, device: torch.device) -> LoadedModel:
    if isinstance(module, Encoder):
        encoder = module
    else:
        embed_dim = getattr(module, "embed_dim", None)
        if not isinstance(embed_dim, int):
            raise DeepclustError(f"{type(module).__name__} needs an integer `embed_dim` attribute (or be an "
                                 "Encoder) to be used as a model")
        encoder = BackboneEncoder(module, _unit_pixels, name=type(module).__name__)
    return LoadedModel(encoder.name, "module", encoder.to(device).eval())


def _unit_pixels(images: torch.Tensor) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> ``float (B, 3, H, W)`` in [0, 1]."""
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def _weights_stamp(folder: Path) -> str:
    """Size and modification time of the weights: re-saving or retraining invalidates the cache."""
    return ";".join(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}"
                    for p in sorted(folder.glob("*.safetensors")))


def _from_hf(spec: str, device: torch.device, attentions: bool, pooling: str,
             resolution: int | None, shared: bool) -> LoadedModel:
    from deepclust.models.pretrained import load_pretrained, resolve_model_dir

    model_dir = resolve_model_dir(spec)
    encoder = load_pretrained(spec, device=device, attentions=attentions, pooling=pooling,
                              resolution=resolution, shared=shared)
    identity = f"hf:{model_dir.resolve()}:{_weights_stamp(model_dir)};pooling={pooling};resolution={resolution}"
    return LoadedModel(spec, "hf", encoder, identity=identity)


def _from_run(spec: str, device: torch.device, trust_custom_code: bool = False) -> LoadedModel:
    from deepclust.train.builder import load_trained_method

    method, cfg = load_trained_method(spec, device=str(device), trust_custom_code=trust_custom_code)
    encoder = method.encoder()
    encoder.name = spec
    encoder.whiten_dim = int(cfg.cluster_whiten_dim)
    head = method.cluster_head()
    identity = f"run:{Path(spec).resolve()}:{_weights_stamp(Path(spec))}"
    return LoadedModel(spec, "run", encoder.eval(), head=None if head is None else head.eval(),
                       config=cfg, identity=identity, image_size=int(cfg.image_size), method=method)


__all__ = ["LoadedModel", "load_model", "is_run_dir", "spec_kind", "MODEL_KINDS",
           "DEFAULT_MAX_SIZE", "PRETRAINED_MAX_SIZE"]
