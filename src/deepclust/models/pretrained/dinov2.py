"""DINOv2 (Oquab et al., 2023) through ``transformers.Dinov2Model`` (and the registers variant).

Features: ``cls`` is the final-LayerNorm CLS token (the DINOv2 paper's global feature),
``mean`` the mean of the final-LayerNorm patch tokens (register tokens excluded). ``masks``
(``(B, N)`` bool) replace patches by the model's mask token (``bool_masked_pos``).
"""

from __future__ import annotations

from typing import Any

import torch

from deepclust.models.pretrained.encoder import PretrainedEncoder


class Dinov2Encoder(PretrainedEncoder):
    kind = "dinov2"

    def tokens(self, pixel_values: torch.Tensor, masks: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        kwargs = {} if masks is None else {"bool_masked_pos": masks}
        hidden = self.model(pixel_values=pixel_values, **kwargs).last_hidden_state  # (B, 1+R+N, D)
        return hidden[:, 0], hidden[:, self.num_prefix_tokens:]

    def _attentions(self, pixel_values: torch.Tensor) -> Any:
        return self.model(pixel_values=pixel_values, output_attentions=True).attentions
