"""A small VGG-style convolutional network for 8-32 px images, fast enough for CPU runs.

It is the default backbone for the bundled 8x8 digits and for quick CIFAR runs:

    stage i:  n_i x [conv3x3 -> BatchNorm -> ReLU]  with widths[i] channels
    between stages: 2x2 max-pool, but only while the map is at least 4 px wide
    end:      global average pool -> (B, widths[-1])

The "pool only while >= 4 px" rule is the pooling schedule that lets one network serve
several input sizes: 8 px digits go 8 -> 4 -> 2 -> pool, 16 px crops 16 -> 8 -> 4, 32 px
CIFAR images 32 -> 16 -> 8, so the last stage always sees a small spatial map instead of a
single pixel. For larger inputs set ``stem_stride`` (``build_backbone`` picks 2 above 48 px
and 4 above 96 px) so that the expensive first stage does not run at full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """Conv-BN-ReLU stages with max-pooling between them; ``forward(x) -> (B, embed_dim)``.

    Args:
        in_chans: input channels (3 RGB, 2 Sobel).
        widths: channels of each stage; ``embed_dim == widths[-1]``.
        convs_per_stage: one int for all stages or one per stage. The default (1, 2, 2)
            keeps the full-resolution first stage cheap (one conv) and gives the later,
            smaller stages more depth.
        stem_stride: stride of the very first convolution (1 for <= 48 px inputs).
        channels_last: convert inputs to ``torch.channels_last`` (see ``ResNet``).
    """

    def __init__(self, in_chans: int = 3, widths: Sequence[int] = (64, 128, 256),
                 convs_per_stage: int | Sequence[int] = (1, 2, 2), stem_stride: int = 1,
                 channels_last: bool = False):
        super().__init__()
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise ValueError(f"small_cnn widths must be positive channel counts, got {widths!r}")
        if isinstance(convs_per_stage, int):
            convs_per_stage = (convs_per_stage,) * len(widths)
        convs_per_stage = tuple(int(n) for n in convs_per_stage)
        if len(convs_per_stage) != len(widths) or min(convs_per_stage) < 1:
            raise ValueError(
                f"small_cnn convs_per_stage {convs_per_stage!r} must give >= 1 conv for each of "
                f"the {len(widths)} stages")
        self.widths = widths
        self.channels_last = channels_last
        stages = []
        prev = in_chans
        for i, (width, n_convs) in enumerate(zip(widths, convs_per_stage)):
            layers = [_conv_bn_relu(prev, width, stride=stem_stride if i == 0 else 1)]
            layers += [_conv_bn_relu(width, width) for _ in range(n_convs - 1)]
            stages.append(nn.Sequential(*layers))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.embed_dim: int = widths[-1]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Last-stage feature map ``(B, embed_dim, h, w)``."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, stage in enumerate(self.stages):
            x = stage(x)
            # Pool between stages while there is something left to pool (see module doc).
            if i < len(self.stages) - 1 and min(x.shape[-2:]) >= 4:
                x = F.max_pool2d(x, kernel_size=2)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_maps(x).mean(dim=(-2, -1))
