"""DINOv2-style training (Oquab, Darcet, Moutakanni, et al., 2023, arXiv:2304.07193).

DINO's [CLS] loss + iBOT's masked patch loss + KoLeo, on the machinery of
`deepclust.methods.ibot.iBOT`, with DINOv2's choices as defaults:

* KoLeo (weight 0.1) on the L2-normalised student [CLS] features of each global crop
  separately (`deepclust.losses.dinov2.koleo_per_crop`: the nearest neighbour is searched
  within that crop's batch), as the named term ``"koleo"``.
* Teacher centring: the moving-average center (``centering: center``, default) or
  Sinkhorn-Knopp with 3 iterations (``centering: sinkhorn``, DINOv2's large models), for both
  the [CLS] and the patch targets.
* Masking (``masking: dinov2``): exactly half of the global crops of a batch are masked,
  their ratios spread over ``linspace(0.1, 0.5)``; each masked token weighs
  ``1 / (its image's number of masked tokens)`` (`deepclust.losses.ibot.iBOTPatchLoss`).
* Teacher momentum 0.992 -> 1 (cosine); the teacher temperature warms up per iteration
  (``teacher_temp_per_iteration: true``) 0.04 -> 0.07 over 30 epochs' worth of steps; the
  heads' last layers are frozen during the first epoch.
* The ViT: LayerScale (init 1e-5), stochastic depth and optional register tokens are
  backbone options: ``backbone_kwargs: {layerscale_init: 1.0e-5, drop_path_rate: 0.1,
  num_register_tokens: 4}`` (the recipes set the first two).
* Separate heads for [CLS] and patches (``shared_head: false``, DINOv2's ``ibot.separate_head``
  of its large models; the base config shares the head).

DINOv2's square-root learning-rate scaling (``lr * sqrt(batch / 1024)``) is the training
config's ``lr_scaling: sqrt`` (the loop's choice, `deepclust.core.schedules.scaled_lr`; the
default stays the linear ``lr * batch / 256``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deepclust.methods.ibot import iBOT, iBOTConfig


@dataclass
class DINOv2Config(iBOTConfig):
    """`iBOTConfig` with DINOv2's defaults (see module doc): out_dim 65536 and patch_out_dim
    65536 in DINOv2's heads (CPU recipes use far less), separate heads, KoLeo 0.1, half the
    global crops masked, teacher momentum 0.992, per-iteration temperature warm-up."""

    out_dim: int | Literal["k"] = 65536
    patch_out_dim: int = 65536
    shared_head: bool = False
    masking: Literal["ibot", "dinov2"] = "dinov2"
    koleo_weight: float = 0.1
    momentum_teacher: float = 0.992
    teacher_temp_per_iteration: bool = True


class DINOv2(iBOT):
    """DINOv2-style self-distillation (see module doc)."""

    name = "dinov2"
    Config = DINOv2Config


__all__ = ["DINOv2", "DINOv2Config"]
