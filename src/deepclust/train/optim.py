"""Optimisers: AdamW, SGD with momentum, and LARS (SwAV / BYOL / Barlow Twins).

The loop sets each group's `lr` and `weight_decay` every step from the schedules; groups
may carry `lr_scale` (multiplies the scheduled lr) and are given `wd_scale` (1 for groups
built with weight decay, 0 for biases and norms) so the scheduled weight decay never
reaches parameters that were excluded from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from deepclust.errors import DeepclustError

OPTIMIZERS = ("adamw", "sgd", "lars")


class LARS(torch.optim.Optimizer):
    """Layer-wise Adaptive Rate Scaling (You et al. 2017), as used by SwAV/BYOL/Barlow Twins.

    For each parameter tensor p with gradient g (shape of p), unless it is excluded:

        g'   = g + wd * p
        q    = eta * ||p|| / ||g'||          (1 when either norm is 0)
        buf  = momentum * buf + q * g'
        p   <- p - lr * buf

    Excluded tensors — biases and normalisation weights (p.ndim <= 1), or every tensor of a
    group with `lars_exclude=True` — get neither weight decay nor adaptation:
    buf = momentum * buf + g, p <- p - lr * buf. `eta` is the trust coefficient (0.001).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        eta: float = 0.001,
    ):
        if lr < 0 or momentum < 0 or weight_decay < 0 or eta <= 0:
            raise ValueError(f"invalid LARS settings lr={lr} momentum={momentum} wd={weight_decay} eta={eta}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                excluded = group["lars_exclude"] or p.ndim <= 1
                if not excluded:
                    update = update.add(p, alpha=group["weight_decay"])
                    param_norm = torch.linalg.vector_norm(p)
                    update_norm = torch.linalg.vector_norm(update)
                    one = torch.ones_like(param_norm)
                    trust = torch.where(
                        param_norm > 0,
                        torch.where(update_norm > 0, group["eta"] * param_norm / update_norm, one),
                        one,
                    )
                    update = update.mul(trust)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(update)
                p.add_(buf, alpha=-group["lr"])
        return loss


def build_optimizer(
    name: str,
    param_groups: list[dict[str, Any]],
    *,
    lr: float,
    momentum: float = 0.9,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    """Optimiser `name` ("adamw" | "sgd" | "lars") over the method's parameter groups.

    Each group keeps its own `weight_decay` (0 for biases/norms); `wd_scale` is recorded
    so the loop's weight-decay schedule respects that exclusion.
    """
    groups = []
    for group in param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        if not params:
            continue
        g = dict(group, params=params)
        g.setdefault("wd_scale", 1.0 if group.get("weight_decay", 0.0) > 0 else 0.0)
        g.setdefault("lr_scale", 1.0)
        groups.append(g)
    if not groups:
        raise DeepclustError("the method has no trainable parameters: nothing for the optimiser to train")
    name = name.lower()
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    raise DeepclustError(f"unknown optimizer {name!r}: choose one of {', '.join(OPTIMIZERS)}")


def set_step_hyperparameters(optimizer: torch.optim.Optimizer, lr: float, weight_decay: float) -> None:
    """Apply this step's scheduled lr and weight decay to every group (respecting scales)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = weight_decay * group.get("wd_scale", 1.0)


#: Trunk parameters before the first block (layer 0 of BEiT's layer-wise decay).
EMBEDDING_PARAMETERS = ("patch_embed", "cls_token", "pos_embed", "register_tokens", "mask_token", "pre_norm")


def vit_layer_id(name: str, depth: int, prefix: str = "backbone.trunk.") -> int:
    """BEiT's layer of a parameter (``get_layer_id_for_vit``): 0 for the embeddings (patch
    embedding, CLS / register / mask tokens, position embeddings, CLIP's pre-norm), ``i + 1``
    for block ``i``, ``depth + 1`` for the final norm and everything outside the student trunk
    (the heads)."""
    if not name.startswith(prefix):
        return depth + 1
    parts = name[len(prefix):].split(".")
    if parts[0] in EMBEDDING_PARAMETERS:
        return 0
    if parts[0] == "blocks":
        return int(parts[1]) + 1
    return depth + 1


def adaptation_parameter_groups(method: torch.nn.Module, weight_decay: float, *, lr_scale: float | None = None,
                                layer_decay: float | None = None) -> list[dict[str, Any]]:
    """``method.parameter_groups(weight_decay)`` with ``--init``'s adaptation applied: every
    group's ``lr_scale`` multiplied by ``lr_scale`` and, with ``layer_decay`` < 1 (a ViT
    backbone), each group split by `vit_layer_id` with ``lr_scale * layer_decay ** (depth + 1
    - layer)`` (BEiT: the heads and final norm keep the full rate, block ``i`` gets
    ``layer_decay ** (depth - i)``, the embeddings ``layer_decay ** (depth + 1)``). None: 1
    (no change). Groups keep their order (a resumed optimiser state fits them)."""
    groups: list[dict[str, Any]] = method.parameter_groups(weight_decay)  # type: ignore[operator]
    scale = 1.0 if lr_scale is None else float(lr_scale)
    decay = 1.0 if layer_decay is None else float(layer_decay)
    if decay == 1.0:
        return [dict(g, lr_scale=g.get("lr_scale", 1.0) * scale) for g in groups] if scale != 1.0 else groups
    blocks = getattr(getattr(getattr(method, "backbone", None), "trunk", None), "blocks", None)
    if blocks is None:
        raise DeepclustError("layer_decay needs a ViT backbone (vit, vit_tiny, vit_small or --init of a ViT); "
                             "set layer_decay=1 for other backbones")
    depth = len(blocks)
    names = {id(p): n for n, p in method.named_parameters()}
    out: list[dict[str, Any]] = []
    for group in groups:
        by_layer: dict[int, list[torch.nn.Parameter]] = {}
        for p in group["params"]:
            by_layer.setdefault(vit_layer_id(names[id(p)], depth), []).append(p)
        for layer in sorted(by_layer):
            out.append(dict(group, params=by_layer[layer], layer_id=layer,
                            lr_scale=group.get("lr_scale", 1.0) * scale * decay ** (depth + 1 - layer)))
    return out
