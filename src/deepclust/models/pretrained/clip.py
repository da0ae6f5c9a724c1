"""CLIP (Radford et al., 2021) through ``transformers.CLIPModel``: image and text towers.

Image features: ``cls`` is the *projected* image embedding (what ``get_image_features``
returns: post-LayerNorm CLS through ``visual_projection``), so it lives in the joint
image-text space; ``mean`` is the mean of the vision tower's patch tokens after the same
post-LayerNorm (not projected: CLIP only trains the projection on the CLS token).
Calling the towers directly keeps this identical across transformers 4.x and 5.x.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from deepclust.errors import DeepclustError
from deepclust.models.pretrained.encoder import PretrainedEncoder


class ClipEncoder(PretrainedEncoder):
    kind = "clip"

    def __init__(self, *args: Any, tokenizer: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tokenizer = tokenizer

    def tokens(self, pixel_values: torch.Tensor, masks: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if masks is not None:
            raise DeepclustError(f"{self.name}: CLIP's vision tower has no mask token")
        out = self.model.vision_model(pixel_values=pixel_values)
        image_embeds = self.model.visual_projection(out.pooler_output)
        patches = self.model.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return image_embeds, patches

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Projected image embeddings ``(B, P)`` (not normalised)."""
        return self.model.visual_projection(self.model.vision_model(pixel_values=pixel_values).pooler_output)

    def _attentions(self, pixel_values: torch.Tensor) -> Any:
        return self.model.vision_model(pixel_values=pixel_values, output_attentions=True).attentions

    @property
    def logit_scale(self) -> float:
        """CLIP's learned temperature, ``exp(logit_scale)`` (100 for the released models)."""
        return float(self.model.logit_scale.detach().exp().item())

    def text_features(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings ``float32 (len(texts), P)`` on the CPU."""
        if self.tokenizer is None:
            raise DeepclustError(f"{self.name} has no tokenizer files (vocab.json, merges.txt or "
                                 f"tokenizer.json); text prompts need them")
        max_len = int(getattr(self.model.config.text_config, "max_position_embeddings", 77))
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                enc = self.tokenizer(list(texts[start:start + batch_size]), padding=True,
                                     truncation=True, max_length=max_len, return_tensors="pt")
                out = self.model.text_model(input_ids=enc["input_ids"].to(self.device),
                                            attention_mask=enc["attention_mask"].to(self.device))
                emb = self.model.text_projection(out.pooler_output)
                chunks.append(F.normalize(emb.float(), dim=-1).cpu())
        return torch.cat(chunks)
