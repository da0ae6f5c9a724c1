"""Losses, one small module each (paper, formula and tensor shapes in its docstring).

Losses are pure functions of their inputs plus their own buffers (DINO's center):
schedule values such as the teacher temperature are arguments, never read from an epoch.
"""

from deepclust.losses.center import Center
from deepclust.losses.dac import DACLoss, dac_thresholds
from deepclust.losses.deepcluster import DeepClusterLoss, inverse_size_weights
from deepclust.losses.dino import DINOLoss
from deepclust.losses.dinov2 import DINOv2ClsLoss, koleo_per_crop
from deepclust.losses.ibot import iBOTPatchLoss
from deepclust.losses.koleo import KoLeoLoss
from deepclust.losses.swav import SwAVLoss

__all__ = ["Center", "DACLoss", "DINOLoss", "DINOv2ClsLoss", "DeepClusterLoss", "KoLeoLoss", "SwAVLoss",
           "dac_thresholds", "iBOTPatchLoss", "inverse_size_weights", "koleo_per_crop"]
