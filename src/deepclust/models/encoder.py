"""The one encoder type: every model source is an `Encoder`.

An encoder maps a batch of ``uint8 (B, H, W, 3)`` images to embeddings ``(B, D)`` in two
steps, ``preprocess`` (deterministic: resize, normalise, maybe Sobel) then ``forward``. It is
an ``nn.Module``: it can be frozen (clustering, evaluation) or trained (a method's backbone,
fine-tuning, a clustering head's trunk). ViTs also give their tokens and last-block attention.

Sources, all of this type:

* `PixelEncoder` (raw pixels) and `PCAEncoder` (PCA of them, fitted on a store): baselines;
* `BackboneEncoder`: one of our backbones (ResNet, small CNN, ViT) with its evaluation
  transform -- what the methods train, and what a training run's embeddings come from;
* Hugging Face DINOv2 / CLIP image towers (`deepclust.models.pretrained`);
* any user ``nn.Module`` wrapped in `BackboneEncoder`.

Attributes every encoder has (plain attributes, not weights):

* ``embed_dim`` -- D;
* ``name`` -- the spec it came from, for messages and reports;
* ``patch_size`` / ``num_prefix_tokens`` -- ViTs (None / 0 otherwise);
* ``spherical`` and ``whiten_dim`` -- how its embeddings are clustered by default
  (`deepclust.cluster.cluster_embeddings`): cosine k-means and PCA-whitening dimension
  (0 = none). Pixel features are clustered Euclidean; learned ones on the sphere.

`embed_images` is the one batched, no-grad embedding loop (progress bar, autocast, eval
mode restored afterwards); everything that embeds a store goes through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from deepclust.core.device import autocast
from deepclust.errors import DeepclustError


class Encoder(nn.Module):
    """Base class: ``preprocess(uint8 (B,H,W,3)) -> float (B,C,h,w)``, ``forward(x) -> (B, D)``."""

    embed_dim: int
    name: str = "encoder"
    patch_size: int | None = None
    num_prefix_tokens: int = 0
    spherical: bool = True
    whiten_dim: int = 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8 (B, H, W, 3)`` on the encoder's device -> the float input of ``forward``."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102 - see class doc
        raise NotImplementedError

    # --- ViTs ---------------------------------------------------------------------------
    @property
    def has_attention(self) -> bool:
        """True when `last_selfattention` and `forward_tokens` work (ViTs)."""
        return False

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``{"cls": (B, D), "patch": (B, N, D)}``; ``masks (B, N)`` bool replaces patches by a
        mask token (masked image modelling) where the encoder has one."""
        raise DeepclustError(f"{self.name} is not a ViT: it has no patch tokens")

    def last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention of the last block ``(B, heads, T, T)``, ``T = prefix + patches``."""
        raise DeepclustError(
            f"{self.name} has no self-attention: attention maps need a ViT (hf:facebook/dinov2-*, "
            "hf:openai/clip-*, or a run trained with a vit_* backbone), not a convolutional network "
            "or pixel features")

    # --- convenience --------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for param in self.parameters():
            return param.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}"


def _uint8_batch(images: torch.Tensor) -> torch.Tensor:
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DeepclustError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {tuple(images.shape)}")
    return images


class PixelEncoder(Encoder):
    """Raw pixels in [0, 1], flattened: ``(B, H*W*3)``. The floor every model must beat."""

    spherical = False

    def __init__(self, image_size: int, name: str = "raw"):
        super().__init__()
        self.image_size = int(image_size)
        self.embed_dim = self.image_size * self.image_size * 3
        self.name = name

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return _uint8_batch(images).float().div_(255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1:] != (self.image_size, self.image_size, 3):
            raise DeepclustError(f"{self.name}: expected {self.image_size}x{self.image_size} images, "
                                 f"got {tuple(x.shape[1:3])}")
        return x.reshape(len(x), -1)


class PCAEncoder(Encoder):
    """Raw pixels projected on their first ``dim`` principal components (whitened by default,
    so k-means is not dominated by the first few): ``(B, dim)``. Fit it with `fit` first.

    The components come from scikit-learn's PCA (randomized solver on large inputs, seeded);
    the transform is ``(x - mean) @ components.T / sqrt(explained_variance)``.
    """

    spherical = False
    mean: torch.Tensor
    components: torch.Tensor
    scale: torch.Tensor

    def __init__(self, image_size: int, dim: int = 50, *, whiten: bool = True, seed: int = 0, name: str = "pca"):
        super().__init__()
        self.pixels = PixelEncoder(image_size)
        self.dim, self.whiten, self.seed, self.name = int(dim), bool(whiten), int(seed), name
        self.embed_dim = self.dim
        d = self.pixels.embed_dim
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("components", torch.zeros(self.dim, d))
        self.register_buffer("scale", torch.ones(self.dim))
        self.fitted = False
        self.fitted_on: str | None = None  # what it was fitted on (a store's source_id), for cache keys

    def fit(self, images: np.ndarray, batch_size: int = 1024, *, source_id: str | None = None) -> PCAEncoder:
        """Fit on ``uint8 (N, S, S, 3)`` images; ``dim`` must be at most ``min(N, S*S*3)``.
        ``source_id`` names those images (a store's ``source_id``): embeddings of another
        store through this PCA are cached under it, never confused with that store's own PCA."""
        from sklearn.decomposition import PCA

        x = embed_images(self.pixels, images, batch_size=batch_size)
        limit = min(x.shape)
        if isinstance(self.dim, bool) or not 1 <= self.dim <= limit:
            raise DeepclustError(f"pca_dim must be an integer between 1 and min(n_images, n_pixels) = "
                                 f"{limit}, got {self.dim!r}.")
        pca = PCA(n_components=self.dim, whiten=self.whiten, random_state=self.seed).fit(x)
        self.mean.copy_(torch.from_numpy(pca.mean_.astype(np.float32)))
        self.components.copy_(torch.from_numpy(pca.components_.astype(np.float32)))
        if self.whiten:
            self.scale.copy_(torch.from_numpy(np.sqrt(pca.explained_variance_).astype(np.float32)))
        self.fitted, self.fitted_on = True, source_id
        return self

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.pixels.preprocess(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise DeepclustError("PCAEncoder is not fitted: call fit(images) first")
        flat = self.pixels(x)
        return ((flat - self.mean) @ self.components.t()) / self.scale


#: How `BackboneEncoder` pools a ViT's tokens into one embedding (see its ``pooling``).
BACKBONE_POOLINGS: tuple[str, ...] = ("cls", "mean", "cls+mean")


class BackboneEncoder(Encoder):
    """A trunk network (our ResNet / small CNN / ViT, or any module with ``embed_dim`` and
    ``forward(x) -> (B, D)``) with the deterministic transform its inputs need.

    Args:
        trunk: the network; ViTs (``forward_features``, ``get_last_selfattention``) also give
            tokens and attention.
        transform: ``uint8 (B,H,W,3) -> float (B,C,S,S)``, e.g. `deepclust.data.views.EvalTransform`
            (resize, normalise with the training statistics, Sobel for DeepCluster).
        name: shown in messages.
        pooling: the embedding of a ViT trunk (one of ``BACKBONE_POOLINGS``): ``cls`` (default,
            ``trunk(x)``: the normalised [CLS] token), ``mean`` (the mean of the normalised patch
            tokens) or ``cls+mean`` (both concatenated, ``2 * embed_dim``: DINO's linear-evaluation
            feature, which adds the average-pooled patch tokens to [CLS]). Other trunks: ``cls``
            only. Use `with_pooling` for another view of the same trunk.
    """

    trunk: Any  # an nn.Module; its ViT methods are looked up by name

    def __init__(self, trunk: nn.Module, transform: Any, name: str = "backbone", pooling: str = "cls"):
        super().__init__()
        embed_dim = getattr(trunk, "embed_dim", None)
        if not isinstance(embed_dim, int) or embed_dim < 1:
            raise DeepclustError(f"{name}: the trunk needs an integer `embed_dim` attribute, "
                                 f"got {embed_dim!r}")
        if pooling not in BACKBONE_POOLINGS:
            raise DeepclustError(f"{name}: unknown pooling {pooling!r}; use one of {', '.join(BACKBONE_POOLINGS)}")
        if pooling != "cls" and not hasattr(trunk, "forward_features"):
            raise DeepclustError(f"{name}: pooling {pooling!r} needs a ViT's patch tokens; "
                                 f"{type(trunk).__name__} only has pooling 'cls' (its own features)")
        self.trunk = trunk
        self.transform = transform
        self.pooling = pooling
        self.embed_dim = embed_dim * (2 if pooling == "cls+mean" else 1)
        self.name = name
        self.patch_size = getattr(trunk, "patch_size", None)
        # CLS plus register tokens before the patch tokens (ViTs say how many; 1 by default)
        self.num_prefix_tokens = int(getattr(trunk, "num_prefix_tokens", 1)) if self.patch_size else 0

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return self.transform(_uint8_batch(images))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            out: torch.Tensor = self.trunk(x)
            return out
        tokens = self.trunk.forward_features(x)
        mean = tokens["patch"].mean(dim=1)
        return mean if self.pooling == "mean" else torch.cat([tokens["cls"], mean], dim=1)

    def with_pooling(self, pooling: str) -> BackboneEncoder:
        """This encoder with another ``pooling``: the same trunk and transform (shared, not
        copied), so it always embeds with the current weights. ``self`` when unchanged."""
        if pooling == self.pooling:
            return self
        view = BackboneEncoder(self.trunk, self.transform, self.name, pooling)
        view.spherical, view.whiten_dim = self.spherical, self.whiten_dim
        return view.train(self.training)

    @property
    def has_attention(self) -> bool:
        return hasattr(self.trunk, "get_last_selfattention")

    def forward_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not hasattr(self.trunk, "forward_features"):
            return super().forward_tokens(x, masks)
        out: dict[str, torch.Tensor] = self.trunk.forward_features(x, masks)
        return out

    def last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_attention:
            return super().last_selfattention(x)
        out: torch.Tensor = self.trunk.get_last_selfattention(x)
        return out


@torch.no_grad()
def embed_images(
    encoder: Encoder,
    images: np.ndarray,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    indices: np.ndarray | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> np.ndarray:
    """``encoder(encoder.preprocess(images[i]))`` for the given indices (all by default):
    float32 ``(n, D)``. The encoder is put in eval mode and restored afterwards; the device
    defaults to the encoder's. See `embed_with_head` for a cluster head's outputs too."""
    emb, _ = embed_with_head(encoder, images, device=device, batch_size=batch_size, indices=indices,
                             amp_dtype=amp_dtype, progress=progress, desc=desc)
    return emb


@torch.no_grad()
def embed_with_head(
    encoder: Encoder,
    images: np.ndarray,
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    indices: np.ndarray | None = None,
    head: nn.Module | None = None,
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "embed",
) -> tuple[np.ndarray, np.ndarray | None]:
    """Embeddings float32 ``(n, D)`` and, when ``head`` is given, its outputs float32
    ``(n, k)`` on those embeddings (else None), in one pass over the images."""
    device = torch.device(device) if device is not None else encoder.device
    indices = np.arange(len(images)) if indices is None else np.asarray(indices)
    modules = [m for m in (encoder, head) if m is not None]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    feats: list[torch.Tensor] = []
    logits: list[torch.Tensor] = []
    try:
        bar = tqdm(total=len(indices), desc=desc, unit="img", disable=not progress, leave=False)
        for start in range(0, len(indices), batch_size):
            idx = indices[start:start + batch_size]
            batch = torch.from_numpy(np.ascontiguousarray(images[idx])).to(device)
            with autocast(device, amp_dtype):
                z = encoder(encoder.preprocess(batch))
                feats.append(z.float().cpu())
                if head is not None:
                    logits.append(head(z).float().cpu())
            bar.update(len(idx))
        bar.close()
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    if not feats:
        raise DeepclustError("no images to embed")
    emb = torch.cat(feats).numpy()
    return emb, (torch.cat(logits).numpy() if head is not None else None)


__all__ = ["BACKBONE_POOLINGS", "BackboneEncoder", "Encoder", "PCAEncoder", "PixelEncoder", "embed_images",
           "embed_with_head"]
