"""The one training loop (`train`), its config, optimisers, checkpoints and logging:
orchestration only. What a method computes lives in `deepclust.methods`; schedules, EMA and
distributed helpers in `deepclust.core`.

Import the submodules directly (`deepclust.train.loop.train`, `deepclust.train.config.TrainConfig`);
this package only re-exports the main entry points lazily.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train", "TrainConfig"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from deepclust.train.loop import train

        return train
    if name == "TrainConfig":
        from deepclust.train.config import TrainConfig

        return TrainConfig
    raise AttributeError(name)
