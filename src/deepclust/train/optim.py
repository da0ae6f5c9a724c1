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
