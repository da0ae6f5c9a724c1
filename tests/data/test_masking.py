"""Block-wise masking (BEiT, used by iBOT and DINOv2): block sizes and shapes, ratio ranges,
iBOT's half-unmasked crops and DINOv2's exactly-half, linspace-spread masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepclust.data.masking import MaskingError, block_mask, dinov2_masks, ibot_masks


def test_blocks_have_at_least_four_patches_and_bounded_aspect_and_never_exceed_the_target():
    rng = np.random.default_rng(0)
    n_blocks = 0
    for _ in range(200):
        target = int(rng.integers(4, 40))
        mask, blocks = block_mask(8, 8, target, rng, return_blocks=True)
        assert mask.sum() <= target
        n_blocks += len(blocks)
        painted = np.zeros((8, 8), bool)
        for top, left, bh, bw in blocks:
            assert bh * bw >= 4 and 0.3 <= bh / bw <= 1 / 0.3 and bh < 8 and bw < 8
            painted[top:top + bh, left:left + bw] = True
        assert np.array_equal(painted, mask)       # the mask is exactly the union of the blocks
    assert n_blocks > 200


def test_block_masks_reach_most_of_the_target_on_a_roomy_grid():
    rng = np.random.default_rng(1)
    counts = [block_mask(14, 14, 60, rng).sum() for _ in range(50)]
    assert max(counts) == 60 and np.mean(counts) > 0.9 * 60


def test_ibot_masks_about_half_the_crops_with_ratios_in_0_1_to_0_5():
    torch.manual_seed(0)
    masks = ibot_masks(400, 14)
    ratios = masks.float().mean(dim=1).numpy()
    masked = ratios > 0
    assert 0.4 < masked.mean() < 0.6
    assert ratios[masked].min() >= 0.05 and ratios[masked].max() <= 0.5
    assert ratios[masked].mean() == pytest.approx(0.3, abs=0.04)   # U(0.1, 0.5) has mean 0.3


def test_masks_follow_torch_seed():
    torch.manual_seed(3)
    a = ibot_masks(8, 6)
    torch.manual_seed(3)
    assert torch.equal(a, ibot_masks(8, 6))


def test_dinov2_masks_exactly_half_the_crops_with_ratios_spread_over_linspace():
    rng = np.random.default_rng(0)
    n, grid = 16, 14
    masks = dinov2_masks(n, grid, rng)
    counts = masks.sum(dim=1).numpy()
    assert (counts > 0).sum() == n // 2
    probs = np.linspace(0.1, 0.5, n // 2 + 1)
    got = np.sort(counts[counts > 0])
    # crop i of the masked ones targets int(N * U(p_i, p_i+1)) patches; block masking may
    # fall a little short of a target, never beyond it
    for j, c in enumerate(got):        # sorted counts stay under the sorted per-crop caps
        assert c <= math.floor(grid * grid * probs[j + 1])
    assert got[0] >= 0.5 * grid * grid * probs[0] and got[-1] >= 0.8 * grid * grid * probs[-2]
    assert np.corrcoef(np.arange(len(got)), got)[0, 1] > 0.9


def test_bad_settings_are_clear_errors():
    with pytest.raises(MaskingError):
        block_mask(4, 4, 3, np.random.default_rng(0), min_patches=0)
    with pytest.raises(MaskingError):
        ibot_masks(2, 4, ratios=(0.0, 0.3), ratio_vars=(0.0,))
    with pytest.raises(MaskingError):
        dinov2_masks(2, 4, mask_probability=1.5)
