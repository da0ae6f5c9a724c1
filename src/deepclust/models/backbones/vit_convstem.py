"""A Vision Transformer with a convolutional stem (Xiao, Singh, Mintun, Darrell, Dollar,
Girshick, "Early Convolutions Help Transformers See Better", NeurIPS 2021).

The ViT's patchify stem (one ``p x p`` convolution with stride ``p``) is replaced by a small
stack of 3x3 convolutions, each followed by BatchNorm and ReLU, whose strides multiply to the
patch size, and a final 1x1 convolution to ``embed_dim`` (the paper's ``ViT_C`` stem: four
stride-2 3x3 convolutions for ``p = 16``). The stem's output grid is the patch grid, so
everything downstream is the plain ViT of `deepclust.models.backbones.vit`: the same tokens,
position embeddings, blocks, CLS/patch outputs and attention maps, and iBOT's mask token
replaces the *stem's* output tokens (``prepare_tokens`` masks whatever ``patch_embed``
returns).

Layout for patch size ``p = 2^s``: ``stem_convs`` 3x3 convolutions of ``stem_width``
channels (doubling at each stride-2 layer), the last ``s`` of them with stride 2 and the
first ``stem_convs - s`` with stride 1 (``stem_convs`` defaults to ``max(s, 2)``, so even a
2 px patch sees a 5x5 pixel neighbourhood), then the 1x1 projection. Convolution weights
keep PyTorch's default (Kaiming-uniform) initialisation; the transformer part keeps DINO's.

Why: a patchify stem has no locality prior below the patch and trains poorly with AdamW on
small data sets; the convolutional stem makes ViTs converge faster, less sensitive to the
learning rate and weight decay, and better on small data (the paper's Sec. 5). On 8x8 digits
the patchify ViT's [CLS] features barely beat chance (see benchmarks/results/methods.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from deepclust.models.backbones.vit import VIT_SIZES, VisionTransformer


class ConvStem(nn.Module):
    """``(B, C, H, W)`` -> ``(B, (H/p)(W/p), embed_dim)`` tokens through 3x3 convolutions
    (BN, ReLU) with total stride ``patch_size`` and a 1x1 projection (module doc)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, width: int = 32,
                 n_convs: int | None = None):
        super().__init__()
        strides = int(round(math.log2(patch_size))) if patch_size > 1 else 0
        if 2 ** strides != patch_size:
            raise ValueError(f"a convolutional stem needs a power-of-two patch_size, got {patch_size}")
        n_convs = max(strides, 2) if n_convs is None else int(n_convs)
        if n_convs < strides or width < 1:
            raise ValueError(f"stem_convs must be >= log2(patch_size) = {strides} and stem_width >= 1, "
                             f"got {n_convs} and {width}")
        self.patch_size = patch_size
        layers: list[nn.Module] = []
        channels = in_chans
        for i in range(n_convs):
            stride = 2 if i >= n_convs - strides else 1
            out = width * 2 ** (i - (n_convs - strides)) if stride == 2 else width  # x2 per stride-2 layer
            layers += [nn.Conv2d(channels, out, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            channels = out
        layers.append(nn.Conv2d(channels, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"ViT input {h}x{w} px is not a multiple of patch_size {self.patch_size}; "
                "resize the crops or pick a patch size that divides the image size")
        out: torch.Tensor = self.proj(x).flatten(2).transpose(1, 2)
        return out


class ConvStemViT(VisionTransformer):
    """`VisionTransformer` whose patch embedding is a `ConvStem`.

    Args: those of `VisionTransformer`, plus ``stem_width`` (channels of the first 3x3
    convolution, 32) and ``stem_convs`` (number of 3x3 convolutions, default
    ``max(log2(patch_size), 2)``).
    """

    def __init__(self, img_size: int = 32, patch_size: int | None = None, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 mask_token: bool = False, layerscale_init: float | None = None,
                 num_register_tokens: int = 0, stem_width: int = 32, stem_convs: int | None = None):
        super().__init__(img_size, patch_size, in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                         drop_path_rate, mask_token, layerscale_init, num_register_tokens)
        self.patch_embed = ConvStem(self.patch_size, in_chans, embed_dim, stem_width,  # type: ignore[assignment]
                                    stem_convs)


def vit_tiny_convstem(**kw) -> ConvStemViT:
    """ViT-Tiny sizes (192-d, 12 blocks, 3 heads) with a convolutional stem."""
    return ConvStemViT(**{**VIT_SIZES["tiny"], **kw})


def vit_small_convstem(**kw) -> ConvStemViT:
    """ViT-Small sizes (384-d, 12 blocks, 6 heads) with a convolutional stem."""
    return ConvStemViT(**{**VIT_SIZES["small"], **kw})


__all__ = ["ConvStem", "ConvStemViT", "vit_small_convstem", "vit_tiny_convstem"]
