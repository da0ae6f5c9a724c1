"""Heads that sit on top of a backbone's pooled features.

* ``MLPProjector``  -- SwAV/SimCLR projection MLP (Linear-BN-ReLU-...-Linear).
* ``DINOHead``      -- DINO's MLP -> L2-normalise -> weight-normalised linear (no bias).
* ``Prototypes``    -- SwAV's prototype matrix (a bias-free linear layer with unit rows).
* ``ClassifierHead``-- DeepCluster's linear classifier, re-initialised after each k-means.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from deepclust.models.init import trunc_normal_init_


def _check_positive(**dims: int) -> None:
    bad = {k: v for k, v in dims.items() if not isinstance(v, int) or v < 1}
    if bad:
        raise ValueError(f"head sizes must be positive integers, got {bad}")


class MLPProjector(nn.Module):
    """SwAV-style projection head: ``n_layers`` linear layers, BN + ReLU between them.

    ``n_layers=2`` gives SwAV's ``Linear(in, hidden) -> BN -> ReLU -> Linear(hidden, out)``;
    ``n_layers=1`` is a single linear map. Input ``(B, in_dim)`` -> output ``(B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int = 2048, out_dim: int = 128,
                 n_layers: int = 2, use_bn: bool = True):
        super().__init__()
        _check_positive(in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, n_layers=n_layers)
        layers: list[nn.Module] = []
        prev = in_dim
        for _ in range(n_layers - 1):
            # The bias is redundant right before a BatchNorm.
            layers.append(nn.Linear(prev, hidden_dim, bias=not use_bn))
            if use_bn:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.ReLU(inplace=True))
            prev = hidden_dim
        layers.append(nn.Linear(prev, out_dim))
        self.net = nn.Sequential(*layers)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class WeightNormLinear(nn.Module):
    """Bias-free linear layer with weight normalisation (Salimans & Kingma, 2016):
    ``W = g * V / ||V||`` row-wise, ``V`` (out, in), ``g`` (out, 1).

    Written by hand rather than with ``torch.nn.utils.parametrizations.weight_norm`` so the
    parameter names (``weight_v``, ``weight_g``) match DINO's checkpoints, ``copy.deepcopy``
    (the EMA teacher) and safetensors see two plain parameters, and nothing is cached.
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        linear = nn.Linear(in_dim, out_dim, bias=False)  # PyTorch's default init for V
        self.weight_v = nn.Parameter(linear.weight.detach().clone())
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    @property
    def weight(self) -> torch.Tensor:
        """The effective weight ``(out, in)``; each row has norm ``g``."""
        return self.weight_g * F.normalize(self.weight_v, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


class DINOHead(nn.Module):
    """DINO projection head (Caron et al., 2021, "Emerging Properties in Self-Supervised
    Vision Transformers").

    ``x (B, in_dim) -> MLP (GELU, optional BN) -> (B, bottleneck_dim) -> L2-normalise
    -> weight-normalised linear, no bias -> (B, out_dim)`` logits.

    With ``norm_last_layer=True`` (DINO's default) ``weight_g`` is fixed to 1, so every
    prototype row has unit norm and the logits are cosine similarities in [-1, 1]; this
    stabilises training. ``last_layer`` is exposed so the loop can drop its gradient during
    the first epoch(s) (``cancel_last_layer_gradients``), as DINO does.
    """

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, n_layers: int = 3, norm_last_layer: bool = True,
                 use_bn: bool = False):
        super().__init__()
        _check_positive(in_dim=in_dim, out_dim=out_dim, hidden_dim=hidden_dim,
                        bottleneck_dim=bottleneck_dim, n_layers=n_layers)
        if n_layers == 1:
            self.mlp: nn.Module = nn.Linear(in_dim, bottleneck_dim)
        else:
            layers: list[nn.Module] = []
            prev = in_dim
            for _ in range(n_layers - 1):
                layers.append(nn.Linear(prev, hidden_dim))
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                prev = hidden_dim
            layers.append(nn.Linear(prev, bottleneck_dim))
            self.mlp = nn.Sequential(*layers)
        self.mlp.apply(trunc_normal_init_)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.norm_last_layer = norm_last_layer
        if norm_last_layer:
            self.last_layer.weight_g.requires_grad_(False)
        self.out_dim = out_dim


    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(z)

    def cancel_last_layer_gradients(self) -> None:
        """Drop the last layer's gradients (DINO freezes it during the first epoch)."""
        for p in self.last_layer.parameters():
            p.grad = None


class Prototypes(nn.Module):
    """SwAV prototypes (Caron et al., 2020): ``z (B, dim) -> z @ C^T (B, n_prototypes)``.

    With unit-norm ``z`` and unit-norm rows of ``C`` (``normalize_()``, called before each
    step as in SwAV) the scores are cosine similarities.
    """

    def __init__(self, dim: int, n_prototypes: int):
        super().__init__()
        _check_positive(dim=dim, n_prototypes=n_prototypes)
        self.layer = nn.Linear(dim, n_prototypes, bias=False)
        self.n_prototypes = n_prototypes

    @property
    def weight(self) -> torch.Tensor:
        """``(n_prototypes, dim)``."""
        return self.layer.weight

    @torch.no_grad()
    def normalize_(self) -> Prototypes:
        """L2-normalise each prototype row in place (no autograd history)."""
        self.layer.weight.copy_(F.normalize(self.layer.weight, dim=1, p=2))
        return self

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z)


class ClassifierHead(nn.Module):
    """DeepCluster's top layer (Caron et al., 2018): a linear map to ``k`` pseudo-classes.

    After each k-means the pseudo-labels are a new, unrelated labelling, so the classifier
    is thrown away: ``reset_parameters()`` re-draws ``W ~ N(0, 0.01^2)`` and zeroes the
    bias, as DeepCluster does. Passing ``k`` rebuilds it with a different number of
    outputs (the optimiser must then be told about the new parameters).
    """

    def __init__(self, in_dim: int, k: int):
        super().__init__()
        _check_positive(in_dim=in_dim, k=k)
        self.in_dim = in_dim
        self.k = k
        self.linear = nn.Linear(in_dim, k)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, k: int | None = None) -> None:
        if k is not None and k != self.k:
            _check_positive(k=k)
            w = self.linear.weight
            self.linear = nn.Linear(self.in_dim, k, device=w.device, dtype=w.dtype)
            self.k = k
        self.linear.weight.normal_(0.0, 0.01)
        self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


__all__ = ["ClassifierHead", "DINOHead", "MLPProjector", "Prototypes", "WeightNormLinear"]
