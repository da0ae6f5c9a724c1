"""DINOv2 (Oquab et al., 2023) through ``transformers.Dinov2Model`` (and the registers variant).

Features: ``cls`` is the final-LayerNorm CLS token (the DINOv2 paper's global feature),
``mean`` the mean of the final-LayerNorm patch tokens (register tokens excluded).
"""

from __future__ import annotations

import torch

from deepclust.models.pretrained.encoder import PretrainedEncoder


class Dinov2Encoder(PretrainedEncoder):
    kind = "dinov2"

    def tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(pixel_values=pixel_values)
        hidden = out.last_hidden_state                      # (B, 1 + R + N, D), after LayerNorm
        return hidden[:, 0], hidden[:, self.num_prefix_tokens:]

    def last_selfattention(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values=pixel_values, output_attentions=True)
        if not out.attentions or out.attentions[-1] is None:
            raise RuntimeError("the model returned no attentions; load it with attn_implementation='eager'")
        return out.attentions[-1]
