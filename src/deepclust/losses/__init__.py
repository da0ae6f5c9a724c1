"""Losses, one small module each (paper, formula and tensor shapes in its docstring).

Losses are pure functions of their inputs plus their own buffers (DINO's center):
schedule values such as the teacher temperature are arguments, never read from an epoch.
"""

from deepclust.losses.center import Center
from deepclust.losses.deepcluster import DeepClusterLoss, inverse_size_weights
from deepclust.losses.dino import DINOLoss
from deepclust.losses.koleo import KoLeoLoss
from deepclust.losses.swav import SwAVLoss

__all__ = ["Center", "DINOLoss", "DeepClusterLoss", "KoLeoLoss", "SwAVLoss", "inverse_size_weights"]
