"""Training-step throughput of the one loop, and how much of the machine it uses.

For each (method, backbone) at 32 px: build the real method (DINO / SwAV with their
default multi-crop views), run the loop's own step (`collate`, `StepModule` forward under
autocast, `deepclust.train.step.optimizer_step`: backward, per-parameter clipping, optimiser,
EMA of the method's pairs) on random uint8 batches, and report

  images/s            timed over --steps steps after --warmup steps
  GFLOP/step          forward + backward, counted by torch.utils.flop_counter.FlopCounterMode
  achieved GFLOP/s    GFLOP/step x steps/s
  % of matmul         achieved / FLOP/s of a big float32 matmul timed in the same run

Example:
  python benchmarks/bench_train_step.py --device cpu --batch-size 32 --out benchmarks/results/train.md
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepclust.core.device import amp_dtype as amp_dtype_for
from deepclust.core.device import autocast
from deepclust.methods.state import TrainContext
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.optim import build_optimizer
from deepclust.train.step import Schedules, StepModule, optimizer_step

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from machine import matmul_flops  # noqa: E402

# Heads sized for a small machine; the views are each method's defaults (multi-crop).
METHOD_KWARGS = {
    "dino": {"out_dim": 4096, "hidden_dim": 512, "bottleneck_dim": 128},
    "swav": {"n_prototypes": 300, "hidden_dim": 512, "out_dim": 128},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(method_name: str, backbone: str, device: torch.device, batch: int, steps: int, warmup: int,
          amp: str) -> dict:
    cfg = TrainConfig(method=method_name, backbone=backbone, method_kwargs=METHOD_KWARGS[method_name],
                      image_size=32, batch_size=batch, epochs=1, optimizer="adamw", clip_grad=3.0, amp=amp)
    torch.manual_seed(0)
    method = build_method_from_config(cfg).to(device)
    amp_dtype = amp_dtype_for(cfg.amp, device)
    n = batch * (steps + warmup + 1)
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    ctx = TrainContext(epoch=0, step=0, steps_per_epoch=steps + warmup + 1, total_epochs=1, device=device,
                       images=images, labels=None, batch_size=batch, amp_dtype=amp_dtype)
    method.on_train_start(ctx)
    method.on_epoch_start(ctx)
    optimizer = build_optimizer(cfg.optimizer, method.parameter_groups(cfg.weight_decay), lr=1e-4)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model = StepModule(method)
    schedules = Schedules.build(method, lr=1e-4, min_lr=1e-6, warmup_epochs=0, weight_decay=0.04,
                                weight_decay_end=0.04, epochs=1, steps_per_epoch=steps + warmup + 1)

    def step(i: int) -> None:
        state = schedules.state(0, i)
        raw = {"images": torch.from_numpy(images[i * batch:(i + 1) * batch]).to(device),
               "index": torch.arange(i * batch, (i + 1) * batch, device=device)}
        with torch.no_grad(), autocast(device, amp_dtype):
            collated = method.collate(raw, state)
        with autocast(device, amp_dtype):
            loss, _ = model(collated, state)
        optimizer_step(method, optimizer, None, loss, state, clip_grad=cfg.clip_grad, params=params)

    with FlopCounterMode(display=False) as counter:
        step(0)
    flops_per_step = counter.get_total_flops()
    for i in range(1, warmup + 1):
        step(i)
    sync(device)
    t = time.perf_counter()
    for i in range(warmup + 1, warmup + 1 + steps):
        step(i)
    sync(device)
    seconds = (time.perf_counter() - t) / steps
    # the share of a step spent making the views (kornia batch augmentation on the device)
    augment_seconds = float("nan")
    if hasattr(method, "views"):
        batch_t = torch.from_numpy(images[:batch]).to(device)
        with torch.no_grad():
            method.views(batch_t)
            sync(device)
            t = time.perf_counter()
            for _ in range(steps):
                method.views(batch_t)
            sync(device)
        augment_seconds = (time.perf_counter() - t) / steps
    return {"method": method_name, "backbone": backbone, "batch": batch, "views": method.views.n_views
            if hasattr(method, "views") else "", "images_per_s": batch / seconds,
            "gflop_per_step": flops_per_step / 1e9, "achieved_gflops": flops_per_step / seconds / 1e9,
            "augment_share": augment_seconds / seconds,
            "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else "off"}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["dino", "swav"])
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18"])
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", default="auto")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--machine", default="2-core CPU dev machine")
    p.add_argument("--out", default=None, help="write a markdown table here")
    args = p.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    peak_before = matmul_flops(torch.float32, n, device=device)
    rows = []
    for m in args.methods:
        for b in args.backbones:
            row = bench(m, b, device, args.batch_size, args.steps, args.warmup, args.amp)
            rows.append(row)
            print(f"{m:6s} {b:10s} {row['images_per_s']:8.1f} img/s  {row['gflop_per_step']:8.2f} GFLOP/step  "
                  f"{row['achieved_gflops']:8.1f} GFLOP/s  augment {100 * row['augment_share']:.0f}%", flush=True)
    # measured before and after: the better is the machine's
    peak = max(peak_before, matmul_flops(torch.float32, n, device=device))
    lines = [
        "# Training step throughput",
        "",
        f"Command: `python {' '.join(sys.argv)}`  ",
        f"Machine: {args.machine} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, device {device})  ",
        f"Date: {datetime.date.today().isoformat()}  ",
        f"Reference: float32 {n}x{n} matmul reaches {peak / 1e9:.1f} GFLOP/s on this machine in the same run.",
        "",
        "Step = the loop's step (collate, forward on every multi-crop view, backward, per-parameter clipping, "
        "AdamW, EMA teacher update for DINO) on a batch of 32x32 uint8 images; FLOPs counted by `FlopCounterMode` "
        "(matmuls/convolutions, forward + backward).",
        "",
        "| method | backbone | batch | views | amp | images/s | GFLOP/step | achieved GFLOP/s "
        "| % of fp32 matmul | time in augmentation |",
        "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['backbone']} | {r['batch']} | {r['views']} | {r['amp']} | "
                     f"{r['images_per_s']:.1f} | {r['gflop_per_step']:.2f} | {r['achieved_gflops']:.1f} | "
                     f"{100 * r['achieved_gflops'] * 1e9 / peak:.0f}% | {100 * r['augment_share']:.0f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
