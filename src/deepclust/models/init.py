"""Weight initialisation shared by the transformer backbone and the DINO head."""

from __future__ import annotations

from torch import nn


def trunc_normal_init_(m: nn.Module) -> None:
    """DINO's initialisation (`module.apply(trunc_normal_init_)`): linear weights from a
    normal truncated at 2 std with std 0.02, zero biases, LayerNorms as identity."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
