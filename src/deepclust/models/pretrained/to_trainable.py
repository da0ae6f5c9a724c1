"""A Hugging Face DINOv2 or CLIP vision tower as deepclust's own trainable ViT, weight for weight.

``hf_vit_spec(spec)`` reads a model's configuration (no weights) and gives the
`VisionTransformer` keyword arguments that reproduce its architecture plus its preprocessing
(mean/std, crop size, patch size); ``load_hf_into_vit(spec, vit)`` copies the weights.
Afterwards ``vit.forward_features(x)`` equals the Hugging Face model on the same pixels:

* DINOv2 (``dinov2``, ``dinov2_with_registers``): ``cls`` / ``patch`` are the final-LayerNorm
  CLS and patch tokens of ``Dinov2Model`` (registers dropped), i.e. what `Dinov2Encoder` uses;
  position embeddings are interpolated for other sizes as Hugging Face does (bicubic on the
  patch grid; with antialiasing for the registers variant).
* CLIP (``clip``): ``cls`` is the vision tower's ``pooler_output``
  (post-LayerNorm CLS, *before* ``visual_projection``: the projection into the text space is
  not part of the trained backbone), ``patch`` the post-LayerNorm patch tokens; CLIP's
  ``pre_layrnorm``, quick GELU and bias-free patch convolution are mapped to ``pre_norm``,
  ``act="quick_gelu"`` and ``patch_bias=False``.

The mapping works on module attributes (``q_proj`` / ``query`` namings of transformers 4.x
and 5.x alike); weights are loaded by transformers from ``*.safetensors`` only, never
pickled files. Unsupported architectures (SwiGLU DINOv2-giant, other model types) are a
`ModelNotAvailableError` that says what is supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from deepclust.errors import ModelNotAvailableError
from deepclust.models.pretrained.hf import (
    model_type,
    read_json,
    require_transformers,
    resolve_model_dir,
    strip_prefix,
)
from deepclust.models.pretrained.preprocess import ImagePreprocess

#: model_type values that map into the trainable ViT.
TRAINABLE_TYPES = ("dinov2", "dinov2_with_registers", "clip")
_ACTS = {"gelu": "gelu", "quick_gelu": "quick_gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


@dataclass
class HFVitSpec:
    """What a Hugging Face vision tower needs from deepclust's ViT and its views.

    vit_kwargs: `VisionTransformer` arguments (architecture; ``pos_embed_size`` is the size the
        position embeddings were learned for). image_size: the processor's crop size (the
        working size a run defaults to). mean, std: its normalisation. model_type: as in config.json.
    """

    model_type: str
    vit_kwargs: dict[str, Any] = field(default_factory=dict)
    image_size: int = 224
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)

    @property
    def patch_size(self) -> int:
        return int(self.vit_kwargs["patch_size"])


def _vision_config(spec: str) -> tuple[str, Any]:
    transformers = require_transformers()
    model_dir = resolve_model_dir(spec)
    mtype = model_type(model_dir)
    if mtype not in TRAINABLE_TYPES:
        raise ModelNotAvailableError(
            f"--init {spec}: model_type '{mtype or 'unknown'}' cannot start a trainable backbone; supported: "
            f"{', '.join(TRAINABLE_TYPES)} (Hugging Face DINOv2 and CLIP vision towers) or a deepclust run")
    try:
        config = transformers.AutoConfig.from_pretrained(str(model_dir))
    except Exception as exc:  # noqa: BLE001 - a damaged config.json
        raise ModelNotAvailableError(f"cannot read the configuration of {spec}: {exc}") from exc
    return mtype, (config.vision_config if mtype == "clip" else config)


def hf_vit_spec(spec: str) -> HFVitSpec:
    """The architecture and preprocessing of ``spec`` (``hf:<id>`` or a folder), from its configs."""
    mtype, c = _vision_config(spec)
    act = _ACTS.get(str(c.hidden_act))
    if act is None:
        raise ModelNotAvailableError(f"--init {spec}: activation {c.hidden_act!r} is not supported "
                                     f"(supported: {', '.join(_ACTS)})")
    kw: dict[str, Any] = {"embed_dim": int(c.hidden_size), "depth": int(c.num_hidden_layers),
                          "num_heads": int(c.num_attention_heads), "patch_size": int(c.patch_size),
                          "pos_embed_size": int(c.image_size), "norm_eps": float(c.layer_norm_eps), "act": act}
    if mtype.startswith("dinov2"):
        if getattr(c, "use_swiglu_ffn", False):
            raise ModelNotAvailableError(f"--init {spec}: DINOv2 with a SwiGLU MLP (ViT-g) is not supported; "
                                         "use a ViT-S/B/L DINOv2")
        kw.update(mlp_hidden_dim=int(c.hidden_size * c.mlp_ratio), qkv_bias=bool(c.qkv_bias),
                  layerscale_init=float(c.layerscale_value),
                  num_register_tokens=int(getattr(c, "num_register_tokens", 0) or 0),
                  pos_antialias=mtype == "dinov2_with_registers")
    else:
        kw.update(mlp_hidden_dim=int(c.intermediate_size), qkv_bias=True, pre_norm=True, patch_bias=False)
    processor = _processor(spec, int(c.image_size))
    crop = processor.output_hw or (int(c.image_size), int(c.image_size))
    return HFVitSpec(mtype, kw, image_size=int(crop[0]), mean=tuple(processor.mean), std=tuple(processor.std))


def _processor(spec: str, image_size: int) -> ImagePreprocess:
    path = resolve_model_dir(spec) / "preprocessor_config.json"
    if path.is_file():
        return ImagePreprocess.from_config(read_json(path))
    return ImagePreprocess(shortest_edge=image_size, crop_hw=(image_size, image_size))


def load_hf_vision_tower(spec: str) -> tuple[str, nn.Module]:
    """``(model_type, module)``: the Hugging Face ``Dinov2Model`` or CLIP ``vision_model``,
    loaded from safetensors (a private copy, in eval mode)."""
    from deepclust.models.pretrained import load_pretrained

    encoder = load_pretrained(spec, shared=False)
    mtype = model_type(resolve_model_dir(spec))
    return mtype, (encoder.model.vision_model if mtype == "clip" else encoder.model)


def _first(module: Any, *paths: str) -> Any:
    for path in paths:
        obj: Any = module
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise ModelNotAvailableError(f"unexpected Hugging Face module layout: none of {paths} in "
                                 f"{type(module).__name__}")


def _copy(dst: torch.Tensor, src: torch.Tensor, name: str) -> None:
    if dst.shape != src.shape:
        raise ModelNotAvailableError(f"--init: {name} has shape {tuple(src.shape)} in the pretrained model but "
                                     f"{tuple(dst.shape)} in the trainable ViT (mismatched backbone)")
    with torch.no_grad():
        dst.copy_(src.detach().to(dst.dtype))


def _copy_linear(dst: Any, src: Any, name: str) -> None:
    _copy(dst.weight, src.weight, name + ".weight")
    if dst.bias is not None:
        _copy(dst.bias, src.bias, name + ".bias")


def _copy_block(blk: Any, layer: Any, i: int, clip: bool) -> None:
    name = f"layer {i}"
    if clip:
        attn, n1, n2 = layer.self_attn, layer.layer_norm1, layer.layer_norm2
        q, k, v, o = attn.q_proj, attn.k_proj, attn.v_proj, attn.out_proj
    else:
        attn, n1, n2 = layer.attention, layer.norm1, layer.norm2
        q = _first(attn, "q_proj", "attention.query")
        k = _first(attn, "k_proj", "attention.key")
        v = _first(attn, "v_proj", "attention.value")
        o = _first(attn, "o_proj", "output.dense")
    for dst_norm, src_norm, tag in ((blk.norm1, n1, "norm1"), (blk.norm2, n2, "norm2")):
        _copy_linear(dst_norm, src_norm, f"{name}.{tag}")
    _copy(blk.attn.qkv.weight, torch.cat([q.weight, k.weight, v.weight]), f"{name}.qkv.weight")
    if blk.attn.qkv.bias is not None:
        _copy(blk.attn.qkv.bias, torch.cat([q.bias, k.bias, v.bias]), f"{name}.qkv.bias")
    _copy_linear(blk.attn.proj, o, f"{name}.proj")
    _copy_linear(blk.mlp.fc1, layer.mlp.fc1, f"{name}.fc1")
    _copy_linear(blk.mlp.fc2, layer.mlp.fc2, f"{name}.fc2")
    if not clip:
        _copy(blk.ls1.gamma, layer.layer_scale1.lambda1, f"{name}.layer_scale1")
        _copy(blk.ls2.gamma, layer.layer_scale2.lambda1, f"{name}.layer_scale2")


def copy_hf_weights(mtype: str, hf: Any, vit: Any) -> None:
    """Copy the weights of a loaded Hugging Face tower ``hf`` into ``vit`` (built from
    `hf_vit_spec`); a `ModelNotAvailableError` names the first tensor whose shape differs."""
    clip = mtype == "clip"
    emb = hf.embeddings
    if clip:
        _copy(vit.cls_token, emb.class_embedding.view(1, 1, -1), "class_embedding")
        _copy(vit.pos_embed, emb.position_embedding.weight.unsqueeze(0), "position_embedding")
        _copy(vit.patch_embed.proj.weight, emb.patch_embedding.weight, "patch_embedding")
        _copy_linear(vit.pre_norm, hf.pre_layrnorm, "pre_layrnorm")
        layers, final = hf.encoder.layers, hf.post_layernorm
    else:
        _copy(vit.cls_token, emb.cls_token, "cls_token")
        _copy(vit.pos_embed, emb.position_embeddings, "position_embeddings")
        _copy_linear(vit.patch_embed.proj, emb.patch_embeddings.projection, "patch_embeddings")
        if vit.register_tokens is not None:
            _copy(vit.register_tokens, emb.register_tokens, "register_tokens")
        layers, final = hf.encoder.layer, hf.layernorm
    if len(layers) != len(vit.blocks):
        raise ModelNotAvailableError(f"--init: the pretrained model has {len(layers)} blocks, the trainable ViT "
                                     f"{len(vit.blocks)} (mismatched backbone)")
    for i, (blk, layer) in enumerate(zip(vit.blocks, layers)):
        _copy_block(blk, layer, i, clip)
    _copy_linear(vit.norm, final, "final LayerNorm")


def load_hf_into_vit(spec: str, vit: nn.Module) -> None:
    """Load ``spec``'s weights (``hf:<id>`` or a Hugging Face folder) into ``vit``."""
    mtype, hf = load_hf_vision_tower(spec)
    try:
        copy_hf_weights(mtype, hf, vit)
    except AttributeError as exc:
        raise ModelNotAvailableError(f"--init {strip_prefix(spec)}: the backbone is not a ViT with the "
                                     f"pretrained model's layout ({exc}; mismatched backbone)") from exc


__all__ = ["HFVitSpec", "TRAINABLE_TYPES", "copy_hf_weights", "hf_vit_spec", "load_hf_into_vit",
           "load_hf_vision_tower"]
