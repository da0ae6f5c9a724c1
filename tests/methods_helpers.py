"""Tiny in-memory data, contexts and one-call steps for the method tests."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepclust.methods.base import Method, StepOutput, StepState
from deepclust.methods.state import TrainContext
from deepclust.models.backbones import build_backbone

SIDE = 8


def pattern_images(n_per_class: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three easily separated 8x8 patterns (bright left half, bright top half, a centre dot)
    with noise and one-pixel shifts: ``uint8 (3n, 8, 8, 3)`` and labels ``(3n,)``."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for cls in range(3):
        for _ in range(n_per_class):
            img = np.zeros((SIDE, SIDE), np.float32)
            if cls == 0:
                img[:, :4] = 220
            elif cls == 1:
                img[:4, :] = 220
            else:
                img[3:5, 3:5] = 255
            img = np.roll(img, rng.integers(-1, 2, size=2), axis=(0, 1))
            img += rng.normal(0, 12, img.shape)
            images.append(np.repeat(np.clip(img, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
            labels.append(cls)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


@dataclass
class ArrayStore:
    images: np.ndarray
    labels: np.ndarray | None


def tiny_backbone(in_chans: int = 3):
    return build_backbone("small_cnn", in_chans=in_chans, img_size=SIDE, widths=(8, 16), convs_per_stage=1)


GENTLE_VIEWS = dict(global_scale=(0.6, 1.0), flip=False, color_jitter=None, grayscale_p=0.0,
                    blur_p=0.0, solarize_p=0.0, mean="half")


def context(images: np.ndarray, labels: np.ndarray | None = None, *, epoch: int = 0, step: int = 0,
            steps_per_epoch: int = 4, total_epochs: int = 2, embed_all=None) -> TrainContext:
    return TrainContext(epoch=epoch, step=step, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                        device=torch.device("cpu"), images=images, labels=labels, batch_size=16,
                        embed_all=embed_all)


def epoch_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "log.csv") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


def step_state(*, epoch: int = 0, step: int = 0, steps_per_epoch: int = 4, total_epochs: int = 2,
               teacher_temp: float = 0.04, teacher_momentum: float = 0.996) -> StepState:
    return StepState(epoch=epoch, step=step, steps_per_epoch=steps_per_epoch, total_epochs=total_epochs,
                     teacher_temp=teacher_temp, teacher_momentum=teacher_momentum)


def run_step(method: Method, images: np.ndarray | torch.Tensor, state: StepState | None = None) -> StepOutput:
    """``collate`` (no grad) then ``training_step`` on uint8 images, indices 0..B-1."""
    x = torch.as_tensor(np.asarray(images))
    state = state or step_state()
    with torch.no_grad():
        batch = method.collate({"images": x, "index": torch.arange(len(x))}, state)
    return method.training_step(batch, state)


# --- the method x backbone grid of the contract suite (tests/contract) -------------------
CONTRACT_SIZE = 16
CONTRACT_METHODS = {
    "deepcluster": {"n_clusters": 3, "pca_dim": 4},
    "swav": {"n_prototypes": 8, "hidden_dim": 16, "out_dim": 8, "freeze_prototypes_niters": 1,
             "augment": {"n_local": 2}},
    "dino": {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8, "augment": {"n_local": 2}},
    "ibot": {"out_dim": 16, "hidden_dim": 16, "bottleneck_dim": 8, "augment": {"n_local": 2}},
    "dinov2": {"out_dim": 16, "patch_out_dim": 12, "hidden_dim": 16, "bottleneck_dim": 8,
               "augment": {"n_local": 2}},
    "dac": {"hidden_dim": 16, "targets": "clean"},  # the recipes' setting: its gather runs in 2 processes
    "scan": {"n_neighbours": 3, "n_heads": 2, "self_label_epochs": 1},  # epoch 2 self-labels
}
# iBOT and DINOv2 distil masked patch tokens, which only a ViT has: they run on vit_tiny only
# (the other backbones are refused at construction, tested in tests/methods/test_ibot.py).
VIT_ONLY_METHODS = ("ibot", "dinov2")
CONTRACT_BACKBONES = {
    "small_cnn": {"widths": [8, 16], "convs_per_stage": 1},
    "resnet18": {"width": 8},
    "vit_tiny": {"depth": 1, "embed_dim": 48},
    "vit_tiny_convstem": {"depth": 1, "embed_dim": 48, "stem_width": 8},  # BatchNorm in the stem
}
COMBOS = [(m, b) for m in CONTRACT_METHODS for b in CONTRACT_BACKBONES
          if m not in VIT_ONLY_METHODS or b.startswith("vit_")]


def contract_images(n: int = 8, seed: int = 0) -> np.ndarray:
    """``uint8 (n, 16, 16, 3)`` noise: the contract checks mechanics, not quality."""
    return np.random.default_rng(seed).integers(0, 256, (n, CONTRACT_SIZE, CONTRACT_SIZE, 3)).astype(np.uint8)


def contract_config(method: str, backbone: str, **kw):
    """A tiny `TrainConfig` for one cell of the grid (16 px, batch 4, 1 thread, no k-NN)."""
    from deepclust.train.config import TrainConfig

    base = dict(method=method, backbone=backbone, backbone_kwargs=dict(CONTRACT_BACKBONES[backbone]),
                method_kwargs=dict(CONTRACT_METHODS[method]), k=3, image_size=CONTRACT_SIZE, epochs=2,
                batch_size=4, lr=0.01, warmup_epochs=0, clip_grad=3.0, device="cpu", knn_every=0,
                monitor_samples=8, num_workers=0, collapse_check=False, torch_threads=1, seed=1)
    base.update(kw)
    return TrainConfig(**base)
