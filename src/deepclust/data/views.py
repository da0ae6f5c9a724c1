"""Batch augmentation on the model's device: float conversion, normalisation, multi-crop,
DeepCluster's Sobel filter and the deterministic evaluation transform.

Methods receive raw ``uint8 (B, S, S, 3)`` batches already on the device (see
docs/ARCHITECTURE.md) and make their views here. Everything is batched (kornia), so
augmentation runs on the GPU when training runs there, and random draws come from
``torch``'s global generator: ``torch.manual_seed`` makes them reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from kornia import augmentation as K
from torch import nn
from torch.nn import functional as F

from deepclust.errors import DeepclustError

# Per-channel statistics of the training sets (RGB, images scaled to [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# For sources without known statistics (digits, MNIST-like): maps [0, 1] to [-1, 1].
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "stl10": (IMAGENET_MEAN, IMAGENET_STD),
    "half": (HALF_MEAN, HALF_STD),
    "digits": (HALF_MEAN, HALF_STD),
    "mnist": (HALF_MEAN, HALF_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


class ViewConfigError(DeepclustError, ValueError):
    """Bad augmentation settings (a ``ValueError`` for library users; the CLI prints it)."""


def resolve_normalization(mean: str | Sequence[float] = "imagenet",
                          std: Sequence[float] | None = None
                          ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``("cifar10")`` or ``(mean, std)`` sequences -> ``(mean, std)`` tuples of 3 floats."""
    if isinstance(mean, str):
        if mean not in NORMALIZATIONS:
            raise ViewConfigError(f"unknown normalisation {mean!r}; use one of "
                                  f"{sorted(NORMALIZATIONS)} or give mean and std as 3 numbers")
        if std is not None:
            raise ViewConfigError(f"normalisation {mean!r} already sets std; do not pass std too")
        return NORMALIZATIONS[mean]
    if std is None:
        raise ViewConfigError("a numeric mean needs a std too (3 numbers each)")
    mean_t, std_t = tuple(float(m) for m in mean), tuple(float(s) for s in std)
    if len(mean_t) != 3 or len(std_t) != 3 or min(std_t) <= 0:
        raise ViewConfigError(f"mean and std must be 3 numbers each, std > 0; got {mean_t}, {std_t}")
    return mean_t, std_t


def to_float_tensor(images: torch.Tensor | np.ndarray,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """``uint8 (B, H, W, 3)`` -> ``float32 (B, 3, H, W)`` in [0, 1] (on ``device`` if given)."""
    if isinstance(images, np.ndarray):
        # Memory-mapped stores are read-only; torch wants a writeable buffer.
        images = torch.from_numpy(np.array(images, copy=not images.flags.writeable))
    if not isinstance(images, torch.Tensor):
        raise DeepclustError(f"expected a uint8 image array or tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DeepclustError(
            f"expected uint8 images of shape (B, H, W, 3), got {images.dtype} {tuple(images.shape)}; "
            "load images with deepclust.data.store.load_images")
    if device is not None:
        images = images.to(device, non_blocking=True)
    return images.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel; ``x`` is ``(B, C, H, W)`` float."""
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _as_float_batch(images: torch.Tensor) -> torch.Tensor:
    """Accept the contract's uint8 NHWC batch, or an already-converted float NCHW batch."""
    if images.dtype == torch.uint8:
        return to_float_tensor(images)
    if images.is_floating_point() and images.ndim == 4 and images.shape[1] == 3:
        return images
    raise DeepclustError(
        f"expected uint8 (B, H, W, 3) or float (B, 3, H, W) images, got "
        f"{images.dtype} {tuple(images.shape)}")


class Sobel(nn.Module):
    """DeepCluster's fixed input filter (Caron et al., 2018): RGB -> grayscale -> Sobel.

    Exactly DeepCluster's two fixed convolutions: a 1x1 conv with weights 1/3 (mean of
    R, G, B) and a 3x3 conv, zero padding, with the kernels
    ``Gx = [[1,0,-1],[2,0,-2],[1,0,-1]]`` and ``Gy = [[1,2,1],[0,0,0],[-1,-2,-1]]``
    (cross-correlation, as ``conv2d`` computes). ``(B, 3, H, W) -> (B, 2, H, W)``.
    Removing colour keeps k-means from clustering on colour alone.
    """

    gray_weight: torch.Tensor
    sobel_weight: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        gray = torch.full((1, 3, 1, 1), 1.0 / 3.0)
        sobel = torch.tensor([[[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]],
                              [[[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]]])
        # Fixed, not learned, and not worth storing in checkpoints.
        self.register_buffer("gray_weight", gray, persistent=False)
        self.register_buffer("sobel_weight", sobel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise DeepclustError(f"Sobel expects (B, 3, H, W) images, got {tuple(x.shape)}")
        g = F.conv2d(x, self.gray_weight.to(x.device, x.dtype))
        return F.conv2d(g, self.sobel_weight.to(x.device, x.dtype), padding=1)


def blur_kernel_size(size: int, min_size: int = 16) -> int:
    """Gaussian-blur kernel for a crop of ``size`` px: about 10% of the side, odd
    (BYOL/DINO use 23 px at 224 px; this gives 9 at 96 px, 3 at 32 px). Returns 0 (no blur)
    below ``min_size`` px, where a 3x3 blur would wipe out most of an 8 px digit."""
    if size < min_size:
        return 0
    return max(3, 2 * int(0.05 * size) + 1)


def _per_view(value: float | Sequence[float], n: int, name: str) -> list[float]:
    """One probability per view: a number for all, or a sequence (the last entry repeats)."""
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise ViewConfigError(f"{name} must be probabilities in [0, 1], got {value!r}")
    return [values[min(i, len(values) - 1)] for i in range(n)]


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    if len(values) != 2:
        raise ViewConfigError(f"{name} must be 2 numbers (low, high), got {values!r}")
    return float(values[0]), float(values[1])


def _check_scale(scale: Sequence[float], name: str) -> tuple[float, float]:
    lo, hi = (float(s) for s in scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ViewConfigError(f"{name} must be (low, high) with 0 < low <= high <= 1, got {scale!r}")
    return lo, hi


class MultiCropAugment:
    """Multi-crop views for self-supervised training (SwAV / DINO, Caron et al. 2020, 2021).

    ``images uint8 (B, S, S, 3)`` -> ``[global_1, ..., global_G, local_1, ..., local_L]``,
    each ``float (B, C, size, size)`` normalised (``C = 2`` with ``sobel=True``).

    Each view, every image drawn independently (BYOL/DINO recipe):
    random-resized crop (``*_scale`` of the area, aspect 3/4-4/3) -> horizontal flip (0.5)
    -> colour jitter (brightness, contrast, saturation, hue; applied with
    ``color_jitter_p``) -> grayscale (``grayscale_p``) -> Gaussian blur (per-view
    probability ``blur_p`` for globals, ``local_blur_p`` for locals; kernel
    ``blur_kernel_size(size)`` unless ``blur_kernel`` is an int, 0 disables) -> solarise
    (``solarize_p`` per global view) -> normalise (``mean``/``std``, a name like
    ``"cifar10"`` or 3 numbers) -> optional Sobel.

    Per-view probabilities take a number (all views) or a sequence (view i uses entry i,
    the last entry repeats), so ``blur_p=(1.0, 0.1)`` is BYOL's asymmetric pair.
    Build from a YAML recipe with ``MultiCropAugment.from_config(dict)``.

    It is a plain callable, not an ``nn.Module``, on purpose: a method that stores it as an
    attribute must not get kornia's sampler buffers in its ``state_dict`` (checkpoints would
    then depend on augmentation settings), and ``method.eval()`` must not reach it. Nothing
    needs moving to a device: kornia draws parameters on the CPU and applies them on the
    input's device, and ``Sobel`` follows its input.
    """

    def __init__(self, n_global: int = 2, global_size: int = 32,
                 global_scale: Sequence[float] = (0.14, 1.0), n_local: int = 0,
                 local_size: int = 16, local_scale: Sequence[float] = (0.05, 0.14),
                 flip: bool = True,
                 color_jitter: Sequence[float] | None = (0.4, 0.4, 0.2, 0.1),
                 color_jitter_p: float = 0.8, grayscale_p: float = 0.2,
                 blur_p: float | Sequence[float] = (1.0, 0.1), local_blur_p: float = 0.5,
                 blur_kernel: int | str = "auto", blur_sigma: Sequence[float] = (0.1, 2.0),
                 solarize_p: float | Sequence[float] = (0.0, 0.2), local_solarize_p: float = 0.0,
                 mean: str | Sequence[float] = "imagenet", std: Sequence[float] | None = None,
                 sobel: bool = False, ratio: Sequence[float] = (3 / 4, 4 / 3)):
        if n_global < 1 or n_local < 0:
            raise ViewConfigError(f"need n_global >= 1 and n_local >= 0, got {n_global}, {n_local}")
        if global_size < 1 or local_size < 1:
            raise ViewConfigError(f"crop sizes must be positive, got {global_size}, {local_size}")
        if color_jitter is not None and len(color_jitter) != 4:
            raise ViewConfigError("color_jitter is (brightness, contrast, saturation, hue) or null, "
                                  f"got {color_jitter!r}")
        if not (isinstance(blur_kernel, int) or blur_kernel == "auto"):
            raise ViewConfigError(f"blur_kernel must be 'auto' or an odd int (0 = off), got {blur_kernel!r}")
        self.n_global, self.n_local = n_global, n_local
        self.global_size, self.local_size = global_size, local_size
        self.mean, self.std = resolve_normalization(mean, std)
        self.sobel = Sobel() if sobel else None
        common: dict[str, Any] = dict(flip=flip, color_jitter=color_jitter, color_jitter_p=color_jitter_p,
                                      grayscale_p=_per_view(grayscale_p, 1, "grayscale_p")[0],
                                      blur_kernel=blur_kernel, blur_sigma=_pair(blur_sigma, "blur_sigma"),
                                      ratio=_pair(ratio, "ratio"))
        g_blur = _per_view(blur_p, n_global, "blur_p")
        g_sol = _per_view(solarize_p, n_global, "solarize_p")
        l_blur = _per_view(local_blur_p, max(n_local, 1), "local_blur_p")
        l_sol = _per_view(local_solarize_p, max(n_local, 1), "local_solarize_p")
        gs = _check_scale(global_scale, "global_scale")
        ls = _check_scale(local_scale, "local_scale")
        self.global_views = [self._pipeline(global_size, gs, g_blur[i], g_sol[i], **common)
                             for i in range(n_global)]
        self.local_views = [self._pipeline(local_size, ls, l_blur[i], l_sol[i], **common)
                            for i in range(n_local)]

    @staticmethod
    def _pipeline(size: int, scale: tuple[float, float], blur_p: float, solarize_p: float, *,
                  flip: bool, color_jitter: Sequence[float] | None, color_jitter_p: float,
                  grayscale_p: float, blur_kernel: int | str, blur_sigma: tuple[float, float],
                  ratio: tuple[float, float]) -> nn.Sequential:
        # "slice" crops each image then resizes: 2x faster than kornia's affine warp here.
        steps: list[nn.Module] = [K.RandomResizedCrop((size, size), scale=scale, ratio=ratio,
                                                      cropping_mode="slice")]
        if flip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if color_jitter is not None and color_jitter_p > 0 and any(color_jitter):
            brightness, contrast, saturation, hue = (float(v) for v in color_jitter)
            steps.append(K.ColorJitter(brightness, contrast, saturation, hue,
                                       p=_per_view(color_jitter_p, 1, "color_jitter_p")[0]))
        if grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=grayscale_p))
        kernel = blur_kernel_size(size) if blur_kernel == "auto" else int(blur_kernel)
        if kernel and blur_p > 0:
            if kernel < 3 or kernel % 2 == 0:
                raise ViewConfigError(f"blur_kernel must be an odd int >= 3 (or 0 = off), got {kernel}")
            steps.append(K.RandomGaussianBlur(kernel, blur_sigma, p=blur_p))
        if solarize_p > 0:
            # thresholds=0, additions=0: invert pixels above exactly 0.5 (torchvision's 128/255).
            steps.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=solarize_p))
        return nn.Sequential(*steps)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> MultiCropAugment:
        """Build from a recipe dict (YAML lists become tuples); unknown keys are an error."""
        import inspect
        valid = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(config) - valid)
        if unknown:
            raise ViewConfigError(f"unknown augmentation option(s) {unknown}; valid: {sorted(valid)}")
        kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
        return cls(**kwargs)

    @property
    def n_views(self) -> int:
        return self.n_global + self.n_local

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x, self.mean, self.std)
        return self.sobel(x) if self.sobel is not None else x

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = _as_float_batch(images)
        views = [self._finish(view(x)) for view in self.global_views]
        views += [self._finish(view(x)) for view in self.local_views]
        return views

    def __repr__(self) -> str:
        return (f"MultiCropAugment({self.n_global} x {self.global_size}px, "
                f"{self.n_local} x {self.local_size}px, sobel={self.sobel is not None}, "
                f"views={self.global_views + self.local_views})")


class EvalTransform:
    """Deterministic transform for embedding and evaluation: resize (bilinear, antialiased,
    only when the size differs) -> normalise -> optional Sobel.

    ``uint8 (B, H, W, 3)`` or ``float (B, 3, H, W)`` in [0, 1] -> ``float (B, C, size, size)``.
    A plain callable like ``MultiCropAugment`` (no state to save).
    """

    def __init__(self, size: int, mean: str | Sequence[float] = "imagenet",
                 std: Sequence[float] | None = None, sobel: bool = False):
        if size < 1:
            raise ViewConfigError(f"EvalTransform size must be positive, got {size}")
        self.size = size
        self.mean, self.std = resolve_normalization(mean, std)
        self.sobel = Sobel() if sobel else None

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _as_float_batch(images)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear",
                              align_corners=False, antialias=True)
        x = normalize(x, self.mean, self.std)
        return self.sobel(x) if self.sobel is not None else x


__all__ = [
    "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "EvalTransform", "HALF_MEAN",
    "HALF_STD", "IMAGENET_MEAN", "IMAGENET_STD", "MultiCropAugment", "NORMALIZATIONS", "Sobel",
    "ViewConfigError", "blur_kernel_size", "normalize", "resolve_normalization", "to_float_tensor",
]
