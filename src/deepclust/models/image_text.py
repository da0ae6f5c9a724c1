"""A CLIP-style image-text model: an image tower (any `Encoder`) and `ImageTextHead`.

`ImageTextHead` is everything beside the image tower: the linear projection (no bias) of the
tower's features into the joint space, the text tower (`deepclust.models.text.TextTransformer`)
with its tokenizer, and the learned scale of the similarities: ``log_scale`` (CLIP, UniCL: the
scale is ``exp(log_scale)``) or ``temperature`` (ALIGN: the scale is ``1 / temperature``). A
method keeps the tower as its ``backbone`` (what ``--init``, layer-wise decay and
``freeze_blocks`` act on) and the head beside it; `ImageTextEncoder` joins the two.

As an `Encoder` it embeds images into the joint space (``forward``: projected, not
normalised), so a trained run clusters with, and is named by, the same embeddings. It
offers what zero-shot classification and cluster naming use from a pretrained CLIP
(`deepclust.models.pretrained.ClipEncoder`): ``text_features(texts)`` (normalised),
``logit_scale`` (the multiplier, a float) and ``embed(images_uint8)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from deepclust.core.device import amp_dtype, resolve_device
from deepclust.errors import DeepclustError
from deepclust.models.encoder import Encoder, embed_images
from deepclust.models.text import TextTokenizer, TextTransformer

__all__ = ["ImageTextEncoder", "ImageTextHead", "MAX_LOG_SCALE"]

#: CLIP clamps its logit scale to at most 100 (ln 100 in log space).
MAX_LOG_SCALE = math.log(100.0)


class ImageTextHead(nn.Module):
    """Projection, text tower + tokenizer and the learned scale (see module doc)."""

    def __init__(self, image_dim: int, text: TextTransformer, *, scale: Literal["log_scale", "temperature"]):
        super().__init__()
        self.image_projection = nn.Linear(int(image_dim), text.embed_dim, bias=False)
        nn.init.normal_(self.image_projection.weight, std=int(image_dim) ** -0.5)
        self.text = text
        self.scale_kind = scale
        if scale == "temperature":      # ALIGN: a learnable temperature, initialised to 1.0
            self.temperature = nn.Parameter(torch.tensor(1.0))
        else:                           # CLIP: ln(1 / 0.07)
            self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.tokenizer: TextTokenizer | None = None
        self.embed_dim = text.embed_dim

    def scale_parameter(self) -> torch.Tensor:
        return self.temperature if self.scale_kind == "temperature" else self.log_scale

    @property
    def logit_scale(self) -> float:
        """The multiplier of the cosine similarities (``exp(log_scale)`` or ``1 / temperature``)."""
        value = self.scale_parameter().detach().float()
        return float(1.0 / value if self.scale_kind == "temperature" else value.exp())

    @torch.no_grad()
    def clamp_scale_(self) -> None:
        """CLIP: ``0 <= log_scale <= ln 100``; ALIGN: ``temperature >= 0.01`` (the same bound)."""
        if self.scale_kind == "temperature":
            self.temperature.clamp_(min=1.0 / 100.0)
        else:
            self.log_scale.clamp_(0.0, MAX_LOG_SCALE)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(B, L)`` -> joint-space text embeddings ``(B, P)`` (not normalised)."""
        out: torch.Tensor = self.text(ids)
        return out

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if self.tokenizer is None:
            raise DeepclustError("this image-text model has no tokenizer yet (it is trained on the captions when "
                                 "training starts and saved with the run)")
        return self.tokenizer.encode(texts, self.text.context_length)


class ImageTextEncoder(Encoder):
    """The image tower and `ImageTextHead` as one `Encoder` in the joint space (see module doc)."""

    kind = "image_text"

    def __init__(self, image: Encoder, head: ImageTextHead, name: str = "image_text"):
        super().__init__()
        self.image = image
        self.head = head
        self.embed_dim = head.embed_dim
        self.name = name
        self.patch_size = image.patch_size
        self.num_prefix_tokens = image.num_prefix_tokens
        self.pooling = "cls"

    @property
    def tokenizer(self) -> TextTokenizer | None:
        return self.head.tokenizer

    @property
    def logit_scale(self) -> float:
        return self.head.logit_scale

    # --- Encoder: images into the joint space ---------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.image.preprocess(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head.image_projection(self.image(x))
        return out

    @property
    def has_attention(self) -> bool:
        return self.image.has_attention

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.image.forward_tokens(x, masks)

    def last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        return self.image.last_selfattention(x)

    # --- CLIP's interface -------------------------------------------------------------------
    @torch.no_grad()
    def text_features(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """L2-normalised text embeddings ``float32 (len(texts), P)`` on the CPU."""
        was_training = self.training
        self.eval()
        try:
            chunks = [F.normalize(self.head.encode_text(self.head.tokenize(texts[i:i + batch_size]).to(self.device))
                                  .float(), dim=-1).cpu() for i in range(0, len(texts), batch_size)]
        finally:
            self.train(was_training)
        if not chunks:
            raise DeepclustError("no texts to embed")
        return torch.cat(chunks)

    def embed(self, images_uint8: np.ndarray, *, pooling: str | None = None, batch_size: int = 64,
              precision: str = "auto", progress: bool = True, desc: str | None = None) -> np.ndarray:
        """Joint-space image embeddings ``float32 (N, P)`` through `embed_images` (``pooling``
        is accepted for the CLIP interface; only ``cls``, the projected embedding, exists)."""
        if pooling not in (None, "cls"):
            raise DeepclustError(f"{self.name} has one image embedding (pooling 'cls'), not {pooling!r}")
        return embed_images(self, np.asarray(images_uint8), batch_size=batch_size,
                            amp_dtype=amp_dtype(precision, resolve_device(self.device)),
                            progress=progress and len(images_uint8) > batch_size,
                            desc=desc or f"embedding with {self.name}")
