"""Self-attention maps of ViTs and the masks DINO draws from them (Caron et al., 2021, fig. 1/3).

For the last layer, the attention of the CLS query to every patch, per head
``(B, heads, h, w)``; :func:`attention_mask` keeps the patches that carry the top ``mass``
(0.6 in DINO) of a map's attention: sort descending, keep the smallest prefix whose sum
reaches ``mass`` of the total. Works with

* every `Encoder` with attention (``has_attention``): Hugging Face DINOv2 / CLIP
  (``load_model(spec, attentions=True)`` loads eager attention from the start; register tokens
  are skipped) and our own ViT inside a run's encoder (``BackboneEncoder``), used as loaded, and
* a bare ViT trunk (``VisionTransformer.get_last_selfattention``) on ``[0, 1]`` pixels.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from deepclust.errors import DeepclustError
from deepclust.models.encoder import BackboneEncoder, Encoder


def as_encoder(model: Any) -> Encoder:
    """An `Encoder` for attention maps: an encoder as is, a method's ``encoder()``, or a bare
    ViT trunk (with ``get_last_selfattention``) on ``[0, 1]`` pixels."""
    if isinstance(model, Encoder):
        return model
    if callable(getattr(model, "encoder", None)):
        encoder: Encoder = model.encoder()
        return encoder
    if hasattr(model, "get_last_selfattention") and hasattr(model, "embed_dim"):
        from deepclust.data.views import to_float_tensor

        return BackboneEncoder(model, to_float_tensor, name=type(model).__name__)
    raise DeepclustError(
        f"{type(model).__name__} has no self-attention to show: attention maps need a ViT "
        f"(hf:facebook/dinov2-*, hf:openai/clip-*, or a run trained with a vit_* backbone)")


def _to_patch_multiple(x: torch.Tensor, patch: int) -> torch.Tensor:
    """Round the input down to whole patches (our ViTs need a multiple of the patch size)."""
    h, w = x.shape[-2:]
    if h % patch or w % patch:
        x = F.interpolate(x, size=(max(patch, h // patch * patch), max(patch, w // patch * patch)),
                          mode="bilinear", antialias=True, align_corners=False)
    return x


def cls_attention_maps(model: Any, images_uint8: np.ndarray, *, batch_size: int = 32) -> np.ndarray:
    """Last-layer CLS-to-patch attention ``float32 (B, heads, h, w)`` (each map sums to at most
    1: the CLS row is a softmax over all tokens, part of it goes to CLS/registers).

    ``model``: an `Encoder` with attention (see `as_encoder`); it is used as loaded."""
    encoder = as_encoder(model)
    if not encoder.has_attention:
        raise DeepclustError(f"{encoder.name} has no self-attention: attention maps need a ViT "
                             "(hf:facebook/dinov2-*, hf:openai/clip-*, or a run trained with a vit_* backbone)")
    images_uint8 = np.asarray(images_uint8)
    if images_uint8.ndim != 4 or images_uint8.shape[-1] != 3:
        raise DeepclustError(f"expected uint8 images (B, H, W, 3), got {images_uint8.shape}")
    patch = int(encoder.patch_size or 1)
    maps = []
    with torch.inference_mode():
        for start in range(0, len(images_uint8), batch_size):
            batch = torch.from_numpy(np.array(images_uint8[start:start + batch_size])).to(encoder.device)
            x = _to_patch_multiple(encoder.preprocess(batch), patch)
            gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
            attn = encoder.last_selfattention(x).float()                       # (B, heads, T, T)
            cls_to_patch = attn[:, :, 0, encoder.num_prefix_tokens:]            # (B, heads, N)
            if cls_to_patch.shape[-1] != gh * gw:
                raise DeepclustError(f"attention has {cls_to_patch.shape[-1]} patch tokens, "
                                     f"expected a {gh}x{gw} grid")
            maps.append(cls_to_patch.reshape(len(batch), -1, gh, gw).cpu().numpy())
    return np.concatenate(maps).astype(np.float32)


def attention_mask(attn: np.ndarray | torch.Tensor, mass: float = 0.6) -> np.ndarray:
    """Keep the most-attended cells of each map until they hold ``mass`` of its attention.

    Args:
        attn: non-negative maps ``(..., h, w)``; each trailing ``h x w`` map is handled alone.
        mass: fraction in (0, 1] of the map's total attention to keep (DINO: 0.6).

    Returns:
        bool ``(..., h, w)``: for each map, the smallest set of cells (largest first) whose
        attention sum is ``>= mass * total``.
    """
    if not 0 < mass <= 1:
        raise DeepclustError(f"mass must be in (0, 1], got {mass}")
    a = attn.detach().cpu().numpy() if torch.is_tensor(attn) else np.asarray(attn)
    if a.ndim < 2:
        raise DeepclustError(f"attention maps must have shape (..., h, w), got {a.shape}")
    if (a < 0).any():
        raise DeepclustError("attention maps must be non-negative")
    flat = a.reshape(-1, a.shape[-2] * a.shape[-1]).astype(np.float64)
    order = np.argsort(-flat, axis=1, kind="stable")
    sorted_vals = np.take_along_axis(flat, order, axis=1)
    cum = np.cumsum(sorted_vals, axis=1)
    target = mass * flat.sum(axis=1, keepdims=True)
    # Number of cells kept: first position where the running sum reaches the target.
    # The relative tolerance only absorbs float rounding when the target is hit exactly.
    n_keep = (cum < target * (1 - 1e-12)).sum(axis=1) + 1
    n_keep = np.minimum(n_keep, flat.shape[1])
    keep_sorted = np.arange(flat.shape[1])[None, :] < n_keep[:, None]
    mask = np.zeros_like(keep_sorted)
    np.put_along_axis(mask, order, keep_sorted, axis=1)
    return mask.reshape(a.shape)


def upsample_map(map_hw: np.ndarray, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """``(h, w)`` -> ``(H, W)`` float map (``nearest`` for masks: whole patches)."""
    t = torch.as_tensor(np.asarray(map_hw, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=size, mode=mode, align_corners=False if mode == "bilinear" else None)
    return out[0, 0].numpy()


def _display(image: np.ndarray, min_side: int) -> np.ndarray:
    """Small images (32 px) are enlarged (nearest) so the overlays can be seen."""
    from PIL import Image
    h, w = image.shape[:2]
    scale = max(1, int(np.ceil(min_side / max(1, min(h, w)))))
    if scale == 1:
        return image
    return np.asarray(Image.fromarray(image).resize((w * scale, h * scale), Image.Resampling.NEAREST))


def overlay(image: np.ndarray, map_hw: np.ndarray, *, alpha: float = 0.55, cmap: str = "inferno",
            min_side: int = 128) -> np.ndarray:
    """``uint8 (H', W', 3)``: the image blended with the colour-mapped, min-max scaled map."""
    import matplotlib
    img = _display(np.asarray(image, dtype=np.uint8), min_side)
    m = upsample_map(map_hw, img.shape[:2])
    m = (m - m.min()) / (m.max() - m.min() + 1e-12)
    colours = matplotlib.colormaps[cmap](m)[..., :3] * 255.0
    return (img * (1 - alpha) + colours * alpha).clip(0, 255).astype(np.uint8)


def masked(image: np.ndarray, mask_hw: np.ndarray, *, dim: float = 0.25, min_side: int = 128) -> np.ndarray:
    """``uint8``: the image with the patches outside ``mask_hw`` darkened to ``dim``."""
    img = _display(np.asarray(image, dtype=np.uint8), min_side)
    m = upsample_map(mask_hw.astype(np.float32), img.shape[:2], mode="nearest")[..., None] > 0.5
    return np.where(m, img, (img * dim).astype(np.uint8))


def to_png(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _hstack(panels: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    spacer = np.full((h, gap, 3), 255, np.uint8)
    padded = [np.pad(p, ((0, h - p.shape[0]), (0, 0), (0, 0)), constant_values=255) for p in panels]
    out = [padded[0]]
    for p in padded[1:]:
        out += [spacer, p]
    return np.concatenate(out, axis=1)


def attention_overlays_for(images: np.ndarray, model, *, mass: float = 0.6,
                           batch_size: int = 32, min_side: int = 96) -> list[bytes]:
    """One PNG per image: the image, its head-averaged CLS attention overlay, and the
    ``mass`` mask, side by side. ``model`` is a ViT encoder/method (see :func:`as_encoder`);
    for report galleries (``cluster_extras``)."""
    images = np.asarray(images)
    maps = cls_attention_maps(model, images, batch_size=batch_size).mean(axis=1)   # (B, h, w)
    masks = attention_mask(maps, mass)
    return [to_png(_hstack([_display(img, min_side), overlay(img, m, min_side=min_side),
                            masked(img, k, min_side=min_side)]))
            for img, m, k in zip(images, maps, masks)]


def cluster_attention_extras(images: np.ndarray, labels_pred: np.ndarray, model, *,
                             per_cluster: int = 4, mass: float = 0.6, seed: int = 0
                             ) -> dict[int, list[tuple[str, bytes]]]:
    """``{cluster: [(caption, png), ...]}`` for ``write_report(cluster_extras=...)``: the
    attention of ``per_cluster`` random members of each cluster."""
    labels_pred = np.asarray(labels_pred)
    rng = np.random.default_rng(seed)
    extras: dict[int, list[tuple[str, bytes]]] = {}
    for c in sorted(int(c) for c in np.unique(labels_pred) if c >= 0):
        idx = np.flatnonzero(labels_pred == c)
        idx = np.sort(rng.choice(idx, min(per_cluster, len(idx)), replace=False))
        pngs = attention_overlays_for(np.asarray(images)[idx], model, mass=mass)
        extras[c] = [(f"image {int(i)}: attention, {mass:.0%} mask", png) for i, png in zip(idx, pngs)]
    return extras
