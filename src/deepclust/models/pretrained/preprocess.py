"""A model's own preprocessing (resize, centre crop, normalise) as batched torch ops.

Hugging Face image processors work image by image through PIL; here the same steps read
from ``preprocessor_config.json`` run on a whole ``uint8 (B, H, W, 3)`` batch at once, on
the model's device, so batches stay tensors:

1. resize so the shortest edge is ``size["shortest_edge"]`` (or to ``height x width``),
   bicubic *with antialiasing* (torch's antialiased bicubic uses PIL's kernel, a = -0.5),
   then round to uint8 as PIL does;
2. centre crop to ``crop_size`` (same offsets as HF: ``(H - h) // 2``);
3. scale by ``rescale_factor`` (1/255) and normalise with ``image_mean`` / ``image_std``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

# PIL resample codes in HF configs -> torch interpolate modes.
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic", 1: "bicubic", 4: "bilinear", 5: "bicubic"}


def _hw(value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value, value
    if "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    return None


@dataclass
class ImagePreprocess:
    """Resize / crop / normalise exactly like the model's image processor (see module doc).

    ``shortest_edge`` and ``resize_hw`` are exclusive ways to resize; ``crop_hw`` is None when
    the processor does not crop.
    """

    shortest_edge: int | None = 224
    resize_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] | None = (224, 224)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    rescale_factor: float = 1 / 255
    mode: str = "bicubic"
    do_resize: bool = True
    do_normalize: bool = True

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> ImagePreprocess:
        """Build from a ``preprocessor_config.json`` dict (CLIP / BitImageProcessor layouts)."""
        size = cfg.get("size", {"shortest_edge": 224})
        shortest = None
        resize_hw = None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, int):
            shortest = size
        else:
            resize_hw = _hw(size)
        crop = _hw(cfg.get("crop_size")) if cfg.get("do_center_crop", True) else None
        return cls(
            shortest_edge=shortest, resize_hw=resize_hw, crop_hw=crop,
            mean=tuple(cfg.get("image_mean", cls.mean)), std=tuple(cfg.get("image_std", cls.std)),
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mode=_RESAMPLE.get(int(cfg.get("resample", 3)), "bicubic"),
            do_resize=bool(cfg.get("do_resize", True)),
            do_normalize=bool(cfg.get("do_normalize", True)),
        )

    def with_resolution(self, resolution: int) -> ImagePreprocess:
        """The same normalisation at another square working resolution (faster on CPU)."""
        return ImagePreprocess(shortest_edge=resolution, resize_hw=None,
                               crop_hw=(resolution, resolution), mean=self.mean, std=self.std,
                               rescale_factor=self.rescale_factor, mode=self.mode)

    @property
    def output_hw(self) -> tuple[int, int] | None:
        return self.crop_hw or self.resize_hw

    def _resize_size(self, h: int, w: int) -> tuple[int, int]:
        if self.resize_hw is not None:
            return self.resize_hw
        short, long = (h, w) if h <= w else (w, h)
        edge = int(self.shortest_edge if self.shortest_edge is not None else short)
        new_short, new_long = edge, int(edge * long / short)
        return (new_short, new_long) if h <= w else (new_long, new_short)

    def __call__(self, images: np.ndarray | torch.Tensor, device: str | torch.device = "cpu"
                 ) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` (numpy or tensor) -> ``float32 (B, 3, h, w)`` model input."""
        # Copy numpy input: store images are read-only memmaps, and a batch copy is cheap.
        x = images if torch.is_tensor(images) else torch.tensor(np.asarray(images))
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (B, H, W, 3), got shape {tuple(x.shape)}")
        x = x.to(device).permute(0, 3, 1, 2).float()
        h, w = x.shape[-2:]
        if self.do_resize:
            size = self._resize_size(h, w)
            if size != (h, w):
                antialias = self.mode in ("bilinear", "bicubic")
                x = F.interpolate(x, size=size, mode=self.mode, antialias=antialias,
                                  align_corners=False if antialias else None)
                # PIL resizes uint8 images: round and clip like it does.
                x = x.round_().clamp_(0, 255)
        if self.crop_hw is not None:
            x = center_crop(x, self.crop_hw)
        x = x * self.rescale_factor
        if self.do_normalize:
            mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
            x = (x - mean) / std
        return x.contiguous()


def center_crop(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Centre crop ``(B, C, H, W)`` to ``hw``, zero-padding first if the image is smaller
    (the offsets match ``transformers.image_transforms.center_crop``)."""
    ch, cw = hw
    h, w = x.shape[-2:]
    if h < ch or w < cw:
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        h, w = x.shape[-2:]
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]
