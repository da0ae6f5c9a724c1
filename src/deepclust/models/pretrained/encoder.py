"""What every pretrained image encoder offers: preprocessing, pooled features, attention.

Subclasses (DINOv2, CLIP) implement :meth:`PretrainedEncoder.tokens`; batching, autocast,
``inference_mode`` and the progress bar live here once.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deepclust.core.device import amp_dtype, autocast
from deepclust.errors import DeepclustError
from deepclust.models.pretrained.preprocess import ImagePreprocess

POOLINGS = ("cls", "mean", "both")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise DeepclustError(f"unknown pooling '{pooling}': use one of {', '.join(POOLINGS)} "
                             f"(CLS token, mean of patch tokens, or both concatenated)")
    return pooling


class PretrainedEncoder:
    """A frozen pretrained ViT with its own preprocessing.

    Attributes:
        name: the spec it was loaded from (``hf:...``).
        model: the Hugging Face module (eval mode, on ``device``).
        preprocess: resize / crop / normalise from the model's processor config.
        patch_size: ViT patch side in pixels.
        num_prefix_tokens: CLS plus register tokens before the patch tokens.
    """

    kind = "vit"

    def __init__(self, name: str, model: nn.Module, preprocess: ImagePreprocess,
                 patch_size: int, device: str | torch.device = "cpu",
                 num_prefix_tokens: int = 1, model_dir: Path | None = None):
        self.name = name
        self.model = model.eval()
        self.preprocess = preprocess
        self.patch_size = int(patch_size)
        self.device = torch.device(device)
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.model_dir = model_dir

    # --- to implement -------------------------------------------------------------------
    def tokens(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model input ``(B,3,h,w)`` -> (``cls`` features ``(B, D_cls)``, patch tokens ``(B, N, D)``)."""
        raise NotImplementedError

    def last_selfattention(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Last layer's softmax attention ``(B, heads, T, T)``, T = prefix tokens + patches."""
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------
    def autocast(self, precision: str = "auto"):
        return autocast(self.device, amp_dtype(precision, self.device))

    def pool(self, cls: torch.Tensor, patches: torch.Tensor, pooling: str) -> torch.Tensor:
        if pooling == "cls":
            return cls
        mean = patches.mean(dim=1)
        return mean if pooling == "mean" else torch.cat([cls, mean], dim=1)

    def pixel_values(self, images_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """``uint8 (B,H,W,3)`` -> normalised model input on the model's device."""
        return self.preprocess(images_uint8, device=self.device)

    def embed(self, images_uint8: np.ndarray, *, pooling: str = "cls", batch_size: int = 64,
              precision: str = "auto", progress: bool = True, desc: str | None = None
              ) -> np.ndarray:
        """Features ``float32 (N, D)`` for ``uint8 (N, H, W, 3)`` images, in order."""
        check_pooling(pooling)
        n = len(images_uint8)
        chunks: list[np.ndarray] = []
        bar = tqdm(total=n, desc=desc or f"embedding with {self.name}", unit="img",
                   disable=not progress or n <= batch_size, leave=False)
        with torch.inference_mode(), self.autocast(precision):
            for start in range(0, n, batch_size):
                batch = np.asarray(images_uint8[start:start + batch_size])
                cls, patches = self.tokens(self.pixel_values(batch))
                chunks.append(self.pool(cls, patches, pooling).float().cpu().numpy())
                bar.update(len(batch))
        bar.close()
        if not chunks:
            raise DeepclustError("no images to embed")
        return np.ascontiguousarray(np.concatenate(chunks).astype(np.float32, copy=False))

    def patch_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        h, w = pixel_values.shape[-2:]
        return h // self.patch_size, w // self.patch_size

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, device={self.device})"
