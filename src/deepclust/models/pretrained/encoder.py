"""What every Hugging Face image encoder offers, as an `Encoder` (an ``nn.Module``).

`PretrainedEncoder` holds the Hugging Face module (``self.model``) and the model's own
preprocessing (`ImagePreprocess`, read from ``preprocessor_config.json``). ``forward`` pools
the tokens per ``pooling``: ``cls`` (the CLS / projected image feature), ``mean`` (mean of the
patch tokens) or ``both`` (concatenated); ``embed_dim`` follows. It is frozen when loaded
(``requires_grad_(False)``, eval mode) and trainable after ``requires_grad_(True)``.
Subclasses (DINOv2, CLIP) implement `tokens` and `_attentions`.

Embedding a whole array goes through the one loop, `deepclust.models.encoder.embed_images`;
`embed` is a convenience around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepclust.core.device import amp_dtype, resolve_device
from deepclust.errors import DeepclustError
from deepclust.models.encoder import Encoder, embed_images
from deepclust.models.pretrained.preprocess import ImagePreprocess

POOLINGS = ("cls", "mean", "both")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise DeepclustError(f"unknown pooling '{pooling}': use one of {', '.join(POOLINGS)} "
                             f"(CLS token, mean of patch tokens, or both concatenated)")
    return pooling


class PretrainedEncoder(Encoder):
    """A pretrained ViT with its own preprocessing.

    Attributes:
        name: the spec it was loaded from (``hf:...`` or a folder).
        model: the Hugging Face module.
        processor: resize / crop / normalise from the model's processor config.
        patch_size: ViT patch side in pixels.
        num_prefix_tokens: CLS plus register tokens before the patch tokens.
        pooling: ``cls``, ``mean`` or ``both`` (sets ``embed_dim``).
        model_dir: the folder the weights came from.
    """

    kind = "vit"
    model: Any  # a transformers PreTrainedModel (typed loosely: transformers is optional)
    cls_dim: int
    patch_dim: int

    def __init__(self, name: str, model: nn.Module, processor: ImagePreprocess, *, patch_size: int,
                 num_prefix_tokens: int = 1, model_dir: Path | None = None, pooling: str = "cls",
                 cls_dim: int, patch_dim: int):
        super().__init__()
        self.name = name
        self.model = model
        self.processor = processor
        self.patch_size = int(patch_size)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.model_dir = model_dir
        self.cls_dim, self.patch_dim = int(cls_dim), int(patch_dim)
        self.pooling = pooling
        self.requires_grad_(False)
        self.eval()

    # --- pooling ------------------------------------------------------------------------
    @property
    def pooling(self) -> str:
        return self._pooling

    @pooling.setter
    def pooling(self, value: str) -> None:
        self._pooling = check_pooling(value)
        self.embed_dim = {"cls": self.cls_dim, "mean": self.patch_dim,
                          "both": self.cls_dim + self.patch_dim}[value]

    def pool(self, cls: torch.Tensor, patches: torch.Tensor, pooling: str | None = None) -> torch.Tensor:
        pooling = pooling or self.pooling
        if pooling == "cls":
            return cls
        mean = patches.mean(dim=1)
        return mean if pooling == "mean" else torch.cat([cls, mean], dim=1)

    # --- to implement ---------------------------------------------------------------------
    def tokens(self, pixel_values: torch.Tensor, masks: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input ``(B,3,h,w)`` -> (``cls`` features ``(B, cls_dim)``, patches ``(B, N, patch_dim)``)."""
        raise NotImplementedError

    def _attentions(self, pixel_values: torch.Tensor) -> Any:
        """The model's per-layer attentions (a tuple), or None when it returned none."""
        raise NotImplementedError

    # --- Encoder --------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """``uint8 (B,H,W,3)`` (tensor or numpy) -> normalised model input on the model's device."""
        device = images.device if torch.is_tensor(images) else self.device
        return self.processor(images, device=device)

    def pixel_values(self, images: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Same as `preprocess`, on the model's device."""
        return self.processor(images, device=self.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, patches = self.tokens(x)
        return self.pool(cls, patches)

    @property
    def has_attention(self) -> bool:
        return True

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        cls, patches = self.tokens(x, masks)
        return {"cls": cls, "patch": patches}

    def last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        attentions = self._attentions(x)
        if not attentions or attentions[-1] is None:
            # Loaded with fused attention: switch this model to eager attention once.
            setter = getattr(self.model, "set_attn_implementation", None)
            if setter is None:
                raise DeepclustError(f"{self.name} returned no attention weights; load it with "
                                     "attentions=True (eager attention)")
            setter("eager")
            attentions = self._attentions(x)
        out: torch.Tensor = attentions[-1]
        return out

    # --- conveniences -----------------------------------------------------------------------
    def embed(self, images_uint8: np.ndarray, *, pooling: str | None = None, batch_size: int = 64,
              precision: str = "auto", progress: bool = True, desc: str | None = None) -> np.ndarray:
        """Features ``float32 (N, D)`` of ``uint8 (N, H, W, 3)`` images (through `embed_images`)."""
        previous = self.pooling
        self.pooling = pooling or previous
        try:
            device = self.device
            return embed_images(self, np.asarray(images_uint8), batch_size=batch_size,
                                amp_dtype=amp_dtype(precision, resolve_device(device)),
                                progress=progress and len(images_uint8) > batch_size,
                                desc=desc or f"embedding with {self.name}")
        finally:
            self.pooling = previous

    def patch_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        h, w = pixel_values.shape[-2:]
        patch = int(self.patch_size or 1)
        return h // patch, w // patch

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pooling={self.pooling!r}, embed_dim={self.embed_dim}"
