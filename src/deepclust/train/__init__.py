"""The one training loop (`train`), its config, schedules, optimisers, checkpoints and DDP helpers.

Import the submodules directly (`deepclust.train.loop.train`, `deepclust.train.config.TrainConfig`);
this package only re-exports the main entry points lazily, so that importing the
distributed helpers from a method does not pull in the loop.
"""

from __future__ import annotations

__all__ = ["train", "TrainConfig", "TrainContext"]


def __getattr__(name: str):
    if name == "train":
        from deepclust.train.loop import train

        return train
    if name == "TrainConfig":
        from deepclust.train.config import TrainConfig

        return TrainConfig
    if name == "TrainContext":
        from deepclust.train.context import TrainContext

        return TrainContext
    raise AttributeError(name)
