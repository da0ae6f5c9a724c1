"""Patch masks for masked image modelling (iBOT, DINOv2): BEiT's block-wise masking.

Bao, Dong, Piao, Wei, "BEiT: BERT Pre-Training of Image Transformers", ICLR 2022, Alg. 1;
used by iBOT (Zhou et al., ICLR 2022) and DINOv2 (Oquab et al., 2023).

`block_mask` masks random rectangles on an ``h x w`` patch grid until ``n_target`` patches
are masked: each rectangle has a target area drawn from ``U(min_patches, remaining)`` and an
aspect ratio ``exp(U(log 0.3, log 1/0.3))``, its sides are rounded and must be smaller than
the grid; a rectangle is kept when it adds between 1 and ``remaining`` new patches (it may
overlap earlier ones). Here a rounded rectangle must also keep at least ``min_patches``
patches and its side ratio within the aspect bounds (the rounding in BEiT's code can give a
3-patch or a 4x1 block; we redraw those). After 10 failed draws in a row masking stops, so
a mask can hold slightly fewer than ``n_target`` patches (never more).

Two per-batch policies build one ``(n, h*w)`` bool mask per global crop:

* `ibot_masks` (iBOT's ``pred_ratio 0 0.3`` / ``pred_ratio_var 0 0.2``): each crop picks
  with probability 1/2 either no mask or a ratio drawn from ``U(0.1, 0.5)``; it masks
  ``int(ratio * h * w)`` patches.
* `dinov2_masks` (DINOv2's ``collate_data_and_cast``): exactly ``int(n * 0.5)`` crops are
  masked, crop ``i`` of them with a ratio drawn from ``U(p_i, p_{i+1})`` where
  ``p = linspace(0.1, 0.5, n_masked + 1)``, the others not at all, in a random order.

Random draws come from a NumPy generator seeded from ``torch``'s global generator, so
``torch.manual_seed`` (and a resumed run's saved RNG state) reproduces the masks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from deepclust.errors import DeepclustError

MAX_ATTEMPTS = 10


class MaskingError(DeepclustError, ValueError):
    """Impossible masking settings."""


def torch_seeded_rng() -> np.random.Generator:
    """A NumPy generator whose seed is drawn from torch's global generator."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _draw_block(mask: np.ndarray, remaining: int, rng: np.random.Generator, min_patches: int,
                log_aspect: tuple[float, float]) -> tuple[int, int, int, int] | None:
    """One rectangle ``(top, left, bh, bw)`` adding 1..remaining new patches, or None."""
    h, w = mask.shape
    lo, hi = math.exp(log_aspect[0]), math.exp(log_aspect[1])
    for _ in range(MAX_ATTEMPTS):
        area = rng.uniform(min_patches, max(min_patches, remaining))
        aspect = math.exp(rng.uniform(*log_aspect))
        bh, bw = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if not (0 < bh < h and 0 < bw < w) or bh * bw < min_patches or not lo <= bh / bw <= hi:
            continue
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        new = bh * bw - int(mask[top:top + bh, left:left + bw].sum())
        if 0 < new <= remaining:
            return top, left, bh, bw
    return None


def block_mask(h: int, w: int, n_target: int, rng: np.random.Generator, *, min_patches: int = 4,
               aspect: tuple[float, float] = (0.3, 1 / 0.3), max_patches: int | None = None,
               return_blocks: bool = False):
    """``(h, w)`` bool mask with at most ``n_target`` patches in blocks (see module doc);
    with ``return_blocks`` also the list of ``(top, left, bh, bw)`` rectangles drawn."""
    if h < 1 or w < 1 or min_patches < 1 or not 0 < aspect[0] <= aspect[1]:
        raise MaskingError(f"bad block-mask settings: grid {h}x{w}, min_patches {min_patches}, aspect {aspect}")
    mask = np.zeros((h, w), dtype=bool)
    blocks: list[tuple[int, int, int, int]] = []
    n_target = min(int(n_target), h * w)
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    count = 0
    while count < n_target:
        remaining = min(n_target - count, max_patches or n_target)
        block = _draw_block(mask, remaining, rng, min_patches, log_aspect)
        if block is None:
            break
        top, left, bh, bw = block
        count += bh * bw - int(mask[top:top + bh, left:left + bw].sum())
        mask[top:top + bh, left:left + bw] = True
        blocks.append(block)
    return (mask, blocks) if return_blocks else mask


def ibot_masks(n: int, grid: int, rng: np.random.Generator | None = None, *,
               ratios: tuple[float, ...] = (0.0, 0.3), ratio_vars: tuple[float, ...] = (0.0, 0.2),
               min_patches: int = 4) -> torch.Tensor:
    """iBOT's per-crop masks ``(n, grid*grid)`` bool: each crop picks one of ``ratios`` at
    random, widened to ``U(r - var, r + var)`` where its var is > 0 (see module doc)."""
    if len(ratios) != len(ratio_vars) or not ratios:
        raise MaskingError(f"ratios and ratio_vars must be equally long lists, got {ratios}, {ratio_vars}")
    rng = rng or torch_seeded_rng()
    out = np.zeros((n, grid * grid), dtype=bool)
    for i in range(n):
        j = int(rng.integers(0, len(ratios)))
        r, v = ratios[j], ratio_vars[j]
        ratio = rng.uniform(r - v, r + v) if v > 0 else r
        if ratio > 0:
            out[i] = block_mask(grid, grid, int(ratio * grid * grid), rng, min_patches=min_patches).ravel()
    return torch.from_numpy(out)


def dinov2_masks(n: int, grid: int, rng: np.random.Generator | None = None, *,
                 mask_probability: float = 0.5, ratio_range: tuple[float, float] = (0.1, 0.5),
                 min_patches: int = 4) -> torch.Tensor:
    """DINOv2's masks ``(n, grid*grid)`` bool: ``int(n * mask_probability)`` crops masked
    with ratios spread over ``linspace(*ratio_range)`` (see module doc)."""
    if not 0.0 <= mask_probability <= 1.0:
        raise MaskingError(f"mask_probability must be in [0, 1], got {mask_probability}")
    rng = rng or torch_seeded_rng()
    n_masked = int(n * mask_probability)
    probs = np.linspace(ratio_range[0], ratio_range[1], n_masked + 1)
    out = np.zeros((n, grid * grid), dtype=bool)
    for i in range(n_masked):
        target = int(grid * grid * rng.uniform(probs[i], probs[i + 1]))
        out[i] = block_mask(grid, grid, target, rng, min_patches=min_patches).ravel()
    return torch.from_numpy(out[rng.permutation(n)])


__all__ = ["MaskingError", "block_mask", "dinov2_masks", "ibot_masks", "torch_seeded_rng"]
