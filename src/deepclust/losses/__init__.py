"""Losses, one small module each (paper, formula and tensor shapes in its docstring)."""

from deepclust.losses.deepcluster import DeepClusterLoss, inverse_size_weights
from deepclust.losses.dino import DINOLoss, teacher_temperature
from deepclust.losses.koleo import KoLeoLoss
from deepclust.losses.swav import SwAVLoss

__all__ = ["DINOLoss", "DeepClusterLoss", "KoLeoLoss", "SwAVLoss", "inverse_size_weights",
           "teacher_temperature"]
