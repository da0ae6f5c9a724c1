"""Vision Transformer (Dosovitskiy et al., 2021) as used by DINO / iBOT, without timm.

Follows DINO's ``vision_transformer.py``: a convolutional patch embedding, a learnable CLS
token, learnable position embeddings (interpolated bicubically for other input sizes, so
multi-crop can feed 32 px global and 16 px local crops to the same model), pre-norm blocks
``x + Attn(LN(x))``, ``x + MLP(LN(x))``, a final LayerNorm, and truncated-normal (std 0.02)
initialisation. Two additions from iBOT: a learnable ``mask_token`` that replaces masked
patch embeddings (created only with ``mask_token=True``: a parameter that no loss uses would
make DDP fail with "parameters that were not used in producing loss"), and
``forward_features`` that returns CLS and patch tokens.

Attention uses ``F.scaled_dot_product_attention`` (fused kernels, no (N, N) matrix kept)
in the normal forward; the explicit softmax path only runs when the weights are asked for
(``get_last_selfattention``, used for DINO attention maps).

Options that let a pretrained Hugging Face DINOv2 or CLIP vision tower be mapped into this
trunk exactly (`deepclust.models.pretrained.to_trainable`): ``norm_eps`` (LayerNorm epsilon),
``act`` (``gelu``, CLIP's ``quick_gelu``, ``gelu_tanh``), ``mlp_hidden_dim``, ``pre_norm``
(CLIP's LayerNorm between the embeddings and the first block), ``patch_bias`` (CLIP's patch
convolution has none), ``pos_embed_size`` (the image size the position embeddings were
learned for, when it differs from ``img_size``) and ``pos_antialias`` (DINOv2-with-registers
interpolates position embeddings with antialiasing).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.models.init import trunc_normal_init_


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViT embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """``x (B, N, D)`` -> ``(B, N, D)``, plus ``(B, heads, N, N)`` weights if asked."""
        b, n, d = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, N, d_head)
        if return_attention:
            attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            out = attn @ v
        else:
            attn = None
            out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(out.transpose(1, 2).reshape(b, n, d))
        return out, attn


class QuickGELU(nn.Module):
    """CLIP's activation ``x * sigmoid(1.702 x)`` (Radford et al., 2021)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


#: Activations of the MLP: exact (erf) GELU, CLIP's quick GELU, the tanh approximation.
ACTIVATIONS = ("gelu", "quick_gelu", "gelu_tanh")


def make_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    if name == "gelu_tanh":
        return nn.GELU(approximate="tanh")
    raise ValueError(f"unknown ViT activation {name!r}; use one of {', '.join(ACTIVATIONS)}")


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, act: str = "gelu"):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = make_activation(act)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """CaiT / DINOv2 LayerScale: a learnable per-channel scale ``gamma * x`` of a residual
    branch, ``gamma`` initialised to ``init`` (DINOv2: 1e-5)."""

    def __init__(self, dim: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block, with LayerScale on both branches when ``layerscale_init``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 drop_path: float = 0.0, layerscale_init: float | None = None, norm_eps: float = 1e-6,
                 act: str = "gelu", mlp_hidden_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias)
        self.ls1: nn.Module = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, mlp_hidden_dim or int(dim * mlp_ratio), act)
        self.ls2: nn.Module = LayerScale(dim, layerscale_init) if layerscale_init else nn.Identity()

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        y, attn = self.attn(self.norm1(x), return_attention=return_attention)
        if return_attention:
            return attn
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` patches -> ``(B, N, D)`` tokens via a strided conv."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, bias: bool = True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"ViT input {h}x{w} px is not a multiple of patch_size {self.patch_size}; "
                "resize the crops or pick a patch size that divides the image size")
        return self.proj(x).flatten(2).transpose(1, 2)


def default_patch_size(img_size: int) -> int:
    """A patch size giving roughly 4x4 to 14x14 patches: 2 up to 16 px, 4 up to 64 px,
    8 up to 128 px, 16 above (DINO's 224 px setting)."""
    if img_size <= 16:
        return 2
    if img_size <= 64:
        return 4
    if img_size <= 128:
        return 8
    return 16


class VisionTransformer(nn.Module):
    """ViT trunk; ``forward(x (B,C,H,W)) -> (B, embed_dim)`` normalised CLS features.

    Args:
        img_size: the size the position embeddings are learned for; other sizes (that are
            multiples of ``patch_size``) are handled by bicubic interpolation.
        patch_size: side of a square patch (``default_patch_size(img_size)`` if None).
        in_chans, embed_dim, depth, num_heads, mlp_ratio, qkv_bias: the usual ViT sizes.
        drop_path_rate: stochastic depth, linearly increasing over blocks (DINO uses 0.1).
        mask_token: create iBOT's learnable mask token (for ``masks=`` in
            ``forward_features``); off by default so that no parameter goes unused (a method
            that masks calls `enable_mask_token` on the trunk it is given).
        layerscale_init: LayerScale on every residual branch with this initial value
            (DINOv2: 1e-5); None (default) for none.
        num_register_tokens: learnable register tokens (Darcet et al., "Vision Transformers
            Need Registers", ICLR 2024) placed after CLS, without position embeddings; they
            are dropped from ``forward_features``'s outputs (``num_prefix_tokens`` counts them).
        norm_eps, act, mlp_hidden_dim, pre_norm, patch_bias, pos_embed_size, pos_antialias:
            see the module docstring (defaults: DINO's ViT).
    """

    def __init__(self, img_size: int = 32, patch_size: int | None = None, in_chans: int = 3,
                 embed_dim: int = 192, depth: int = 12, num_heads: int = 3,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path_rate: float = 0.0,
                 mask_token: bool = False, layerscale_init: float | None = None,
                 num_register_tokens: int = 0, norm_eps: float = 1e-6, act: str = "gelu",
                 mlp_hidden_dim: int | None = None, pre_norm: bool = False, patch_bias: bool = True,
                 pos_embed_size: int | None = None, pos_antialias: bool = False):
        super().__init__()
        patch_size = patch_size or default_patch_size(img_size)
        pos_size = pos_embed_size or img_size
        if pos_size % patch_size:
            raise ValueError(f"ViT img_size {pos_size} must be a multiple of patch_size {patch_size}")
        make_activation(act)  # a clear error for an unknown name before any weight is made
        self.img_size = img_size
        self.patch_size = patch_size
        self.embed_dim: int = embed_dim
        self.num_heads = num_heads
        self.pos_antialias = bool(pos_antialias)
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, bias=patch_bias)
        self.grid_size = pos_size // patch_size
        self.num_patches = self.grid_size ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, embed_dim))
        # iBOT's masked-image-modelling token, zero at start as in iBOT; only when asked for.
        self.mask_token: nn.Parameter | None = (nn.Parameter(torch.zeros(1, 1, embed_dim))
                                                if mask_token else None)
        if num_register_tokens < 0:
            raise ValueError(f"num_register_tokens must be >= 0, got {num_register_tokens}")
        self.num_register_tokens = int(num_register_tokens)
        self.num_prefix_tokens = 1 + self.num_register_tokens
        self.register_tokens: nn.Parameter | None = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None)
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_path=r, layerscale_init=layerscale_init,
                  norm_eps=norm_eps, act=act, mlp_hidden_dim=mlp_hidden_dim)
            for r in rates)
        # CLIP's ``pre_layrnorm``: normalises the embedded tokens before the first block
        self.pre_norm: nn.Module = nn.LayerNorm(embed_dim, eps=norm_eps) if pre_norm else nn.Identity()
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps)

        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        self.apply(trunc_normal_init_)

    def enable_mask_token(self) -> nn.Parameter:
        """Create the learnable mask token (zeros, as in iBOT) if the ViT has none; returns it."""
        if self.mask_token is None:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim, device=self.cls_token.device))
        return self.mask_token

    def interpolate_pos_encoding(self, h_patches: int, w_patches: int) -> torch.Tensor:
        """Position embeddings ``(1, 1 + h*w, D)`` for an ``h x w`` patch grid."""
        if h_patches == w_patches == self.grid_size:
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        g = self.grid_size
        patch_pos = patch_pos.reshape(1, g, g, self.embed_dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos.float(), size=(h_patches, w_patches), mode="bicubic",
                                  align_corners=False, antialias=self.pos_antialias).to(self.pos_embed.dtype)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, h_patches * w_patches, self.embed_dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def prepare_tokens(self, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        """Image ``(B,C,H,W)`` -> tokens ``(B, 1+N, D)`` with CLS and position embeddings.

        ``masks`` is an optional ``(B, N)`` bool tensor; True patches are replaced by the
        learnable ``mask_token`` *before* position embeddings are added (iBOT).
        """
        b, _, h, w = x.shape
        tokens = self.patch_embed(x)
        if masks is not None:
            if self.mask_token is None:
                raise ValueError("this ViT has no mask token: build it with mask_token=True to pass masks")
            if masks.shape != tokens.shape[:2]:
                raise ValueError(
                    f"patch mask has shape {tuple(masks.shape)} but the image gives "
                    f"{tuple(tokens.shape[:2])} (batch, patches)")
            tokens = torch.where(masks.unsqueeze(-1).bool(), self.mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self.interpolate_pos_encoding(h // self.patch_size, w // self.patch_size)
        if self.register_tokens is not None:  # after the position embeddings, as in DINOv2
            tokens = torch.cat([tokens[:, :1], self.register_tokens.expand(b, -1, -1), tokens[:, 1:]], dim=1)
        return self.pre_norm(tokens)

    def forward_features(self, x: torch.Tensor, masks: torch.Tensor | None = None
                         ) -> dict[str, torch.Tensor]:
        """``{"cls": (B, D), "patch": (B, N, D)}`` after the final LayerNorm."""
        tokens = self.prepare_tokens(x, masks)
        for blk in self.blocks:
            tokens = blk(tokens)
        tokens = self.norm(tokens)
        return {"cls": tokens[:, 0], "patch": tokens[:, self.num_prefix_tokens:]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["cls"]

    def get_last_selfattention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention weights of the last block, ``(B, heads, T, T)`` with
        ``T = num_prefix_tokens + N``; row 0 is the CLS query (DINO's attention maps)."""
        tokens = self.prepare_tokens(x)
        for blk in self.blocks[:-1]:
            tokens = blk(tokens)
        return self.blocks[-1](tokens, return_attention=True)


#: The named ViT sizes (DeiT's): width, depth and heads; keywords given to a constructor win.
VIT_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"embed_dim": 192, "depth": 12, "num_heads": 3},
    "small": {"embed_dim": 384, "depth": 12, "num_heads": 6},
}


def vit_tiny(**kw) -> VisionTransformer:
    """ViT-Tiny: 192-d, 12 blocks, 3 heads (5.5M parameters at 16 px patches)."""
    return VisionTransformer(**{**VIT_SIZES["tiny"], **kw})


def vit_small(**kw) -> VisionTransformer:
    """ViT-Small: 384-d, 12 blocks, 6 heads (21.7M parameters at 16 px patches)."""
    return VisionTransformer(**{**VIT_SIZES["small"], **kw})


__all__ = ["VIT_SIZES", "VisionTransformer", "vit_tiny", "vit_small", "default_patch_size"]
