"""Throughput of backbones and batch views on this machine, plus a quick sanity check that
the small CNN learns on 8x8 digits (its pooling schedule was designed for them).

    python benchmarks/bench_backbones.py                 # all three parts
    python benchmarks/bench_backbones.py --part speed --batch 128 --size 32 --iters 5

Figures are forward+backward images/s (training cost without the optimiser step) and
augmented images/s for ``MultiCropAugment``, as wall-clock rates and as images per CPU-second
(process time summed over threads), which stays meaningful on a machine shared with other
jobs. Nothing here is asserted; results go to benchmarks/results/models.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.nn import functional as F

from deepclust.data.views import EvalTransform, MultiCropAugment
from deepclust.models.backbones import build_backbone
from deepclust.models.heads import ClassifierHead


def _timed(fn, iters: int) -> tuple[float, float]:
    """Mean (wall seconds, CPU seconds) per call of ``fn``."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(iters):
        fn()
    return (time.perf_counter() - wall) / iters, (time.process_time() - cpu) / iters


def bench_backbones(names: list[str], batch: int, size: int, iters: int,
                    channels_last: bool) -> None:
    print(f"forward+backward, batch {batch}, {size} px, {torch.get_num_threads()} threads")
    x = torch.randn(batch, 3, size, size)
    for name in names:
        model = build_backbone(name, img_size=size, channels_last=channels_last).train()
        n_params = sum(p.numel() for p in model.parameters())
        def step():
            model.zero_grad(set_to_none=True)
            model(x).float().pow(2).mean().backward()

        step()  # warm-up (allocator, oneDNN kernels)
        wall, cpu = _timed(step, iters)
        with torch.no_grad():
            model.eval()
            wall_fwd, cpu_fwd = _timed(lambda: model(x), iters)
        print(f"  {name:14s} {n_params / 1e6:6.2f}M params  "
              f"train {batch / wall:6.0f} img/s ({batch / cpu:6.0f} per CPU-s)  "
              f"inference {batch / wall_fwd:6.0f} img/s ({batch / cpu_fwd:6.0f} per CPU-s)")


def bench_views(batch: int, size: int, iters: int) -> None:
    imgs = torch.randint(0, 256, (batch, size, size, 3), dtype=torch.uint8)
    configs = {
        "2 globals": dict(global_size=size),
        "2 globals + 6 locals": dict(global_size=size, n_local=6, local_size=size // 2),
    }
    print(f"MultiCropAugment on {batch} uint8 images of {size} px")
    for label, cfg in configs.items():
        aug = MultiCropAugment(**cfg, mean="cifar10")
        aug(imgs)
        wall, cpu = _timed(lambda: aug(imgs), iters)
        print(f"  {label:22s} {batch / wall:6.0f} source images/s ({batch / cpu:6.0f} per CPU-s, "
              f"{wall * 1000:.0f} ms per batch)")


def digits_sanity(epochs: int) -> None:
    """Supervised small_cnn on sklearn's 8x8 digits: does the 8 px pooling schedule learn?"""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    torch.manual_seed(0)
    data = load_digits()
    imgs = (data.images / 16.0 * 255).round().astype(np.uint8)
    imgs = np.repeat(imgs[..., None], 3, axis=-1)
    x_tr, x_te, y_tr, y_te = train_test_split(imgs, data.target, test_size=0.3, random_state=0,
                                              stratify=data.target)
    to_input = EvalTransform(8, mean="digits")
    x_tr, x_te = to_input(torch.from_numpy(x_tr)), to_input(torch.from_numpy(x_te))
    y_tr, y_te = torch.from_numpy(y_tr), torch.from_numpy(y_te)
    model = torch.nn.Sequential(build_backbone("small_cnn", img_size=8), ClassifierHead(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x_tr)).split(64):
            loss = F.cross_entropy(model(x_tr[idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    print(f"small_cnn supervised on digits: {epochs} epochs, test accuracy {acc:.3f} "
          f"({time.perf_counter() - start:.1f} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["all", "speed", "views", "digits"], default="all")
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18", "vit_tiny"])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--epochs", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.part in ("all", "speed"):
        bench_backbones(args.backbones, args.batch, args.size, args.iters, args.channels_last)
    if args.part in ("all", "views"):
        bench_views(2 * args.batch, args.size, args.iters)
    if args.part in ("all", "digits"):
        digits_sanity(args.epochs)


if __name__ == "__main__":
    main()
