"""A tiny toy method for the training-loop tests (no dependency on the real methods).

The toy: a linear encoder on 8x8 images, a k-way head (the "last layer"), two noisy views
drawn from torch's global RNG in `collate` (so RNG restore matters), an MSE + centering
loss with a `center` buffer updated after each optimiser step (so buffers must be
checkpointed). `make_toy` is the ``module:factory`` hook (``method: toy_method:make_toy``).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from deepclust.core.distributed import all_reduce_mean
from deepclust.methods.base import Method, StepOutput, StepState
from deepclust.models.encoder import Encoder
from deepclust.train.config import TrainConfig

SIZE = 8


class ToyEncoder(Encoder):
    """``x (B, 3, 8, 8) -> x.flatten(1) @ weight.T + bias``; state_dict keys weight/bias."""

    def __init__(self, dim: int):
        super().__init__()
        lin = nn.Linear(SIZE * SIZE * 3, dim)
        self.weight, self.bias = lin.weight, lin.bias
        self.embed_dim, self.name = dim, "toy"
        self.constant = False

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).float() / 255.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.linear(x.flatten(1), self.weight, self.bias)
        return z * 0 + 1 if self.constant else z


class ToyMethod(Method):
    name = "toy"

    def __init__(self, k: int = 4, dim: int = 16, noise: float = 0.1, std_weight: float = 0.05):
        super().__init__(ToyEncoder(dim))
        self.head = nn.Linear(dim, k)
        self.register_buffer("center", torch.zeros(k))
        self.noise = noise
        self.std_weight = std_weight  # the batch-std term does not split over processes (0 in the DDP test)
        self.freeze_last_layer_epochs = 1
        self.interrupt_at_step: int | None = None   # raise KeyboardInterrupt after this global step
        self.nan_at_step: int | None = None
        self._batch_center: torch.Tensor | None = None

    @property
    def constant_embedding(self) -> bool:
        return self.backbone.constant

    @constant_embedding.setter
    def constant_embedding(self, value: bool) -> None:
        self.backbone.constant = value

    def collate(self, batch, state: StepState):
        x = self.backbone.preprocess(batch["images"])
        return {"views": [x + self.noise * torch.randn_like(x), x + self.noise * torch.randn_like(x)]}

    def training_step(self, batch, state: StepState) -> StepOutput:
        v1, v2 = batch["views"]
        z1, z2 = self.head(self.backbone(v1)), self.head(self.backbone(v2))
        self._batch_center = all_reduce_mean(torch.cat([z1, z2]).detach().mean(0))
        z = torch.cat([z1, z2])
        terms = {"match": ((z1 - z2) ** 2).mean(), "center": ((z - self.center) ** 2).mean(),
                 "spread": -z.std(0).mean()}
        if self.nan_at_step is not None and state.step == self.nan_at_step:
            terms["match"] = terms["match"] * float("nan")
        return StepOutput(terms=terms, weights={"center": 0.1, "spread": self.std_weight},
                          logs={"z_norm": z1.detach().norm(dim=1).mean()})

    def after_optimizer_step(self, state: StepState) -> None:
        self.center.mul_(0.9).add_(0.1 * self._batch_center)
        if self.interrupt_at_step is not None and state.step + 1 == self.interrupt_at_step:
            raise KeyboardInterrupt("test interrupt")

    def last_layer_parameters(self):
        return list(self.head.parameters())


def make_toy(cfg: TrainConfig) -> ToyMethod:
    """Factory for `cfg.method = "toy_method:make_toy"` (the DDP and CLI tests)."""
    return ToyMethod(k=cfg.k, **cfg.method_kwargs)


def toy_store(n: int = 64, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    # four colour prototypes plus noise: enough structure for k-means to find groups
    protos = rng.integers(0, 256, (4, 1, 1, 3))
    images = np.clip(protos[labels] + rng.normal(0, 30, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    return SimpleNamespace(images=images, labels=labels, paths=[f"toy#{i}" for i in range(n)])


def toy_cfg(**kw) -> TrainConfig:
    base = dict(method="toy", epochs=2, batch_size=16, optimizer="adamw", lr=0.01, warmup_epochs=0.5,
                weight_decay=0.04, weight_decay_end=0.1, clip_grad=1.0, knn_every=0, k=4,
                monitor_samples=64, num_workers=1, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)
