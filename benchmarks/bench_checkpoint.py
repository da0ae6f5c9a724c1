"""Checkpoint write time: the generation layout (ckpt-<epoch>-<id>/ + an atomic `latest`
switch, issue 12) against the flat layout before it (four files replaced one by one).

The same script times whichever deepclust it imports, so "before" is the old code through
PYTHONPATH (a worktree of the commit before issue 12):

    git worktree add /tmp/dc-ck-before e26b2c3
    PYTHONPATH=/tmp/dc-ck-before/src python benchmarks/bench_checkpoint.py --label before
    python benchmarks/bench_checkpoint.py --label after
    # smoke: python benchmarks/bench_checkpoint.py --methods small_cnn --repeats 2

Each method is a DINO built like `deepclust train` builds it (small_cnn: 32-64-128 channels;
resnet18), with AdamW state after one optimiser step, so the files are the real size. The
figure is the median wall time of `save_checkpoint` over --repeats saves into --out (put it
on the disk you train on: fsync cost is the disk's). Prints a Markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import deepclust  # noqa: E402
from deepclust.train import checkpoint as ckpt  # noqa: E402
from deepclust.train.builder import build_method_from_config  # noqa: E402
from deepclust.train.config import TrainConfig  # noqa: E402
from deepclust.train.optim import build_optimizer  # noqa: E402
from machine import machine_line  # noqa: E402

BACKBONES = {"small_cnn": {"widths": [32, 64, 128]}, "resnet18": {}}


def build(backbone: str, image_size: int) -> tuple[torch.nn.Module, torch.optim.Optimizer, dict]:
    cfg = TrainConfig(method="dino", backbone=backbone, backbone_kwargs=BACKBONES[backbone], k=10,
                      image_size=image_size, device="cpu")
    method = build_method_from_config(cfg)
    optimizer = build_optimizer("adamw", method.parameter_groups(0.04), lr=1e-3)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    sum(p.float().sum() for p in params).backward()  # any gradient: AdamW state of the real size
    optimizer.step()
    return method, optimizer, cfg.to_dict()


def time_saves(method, optimizer, config: dict, out: Path, repeats: int) -> dict:
    times = []
    for epoch in range(1, repeats + 1):
        start = time.perf_counter()
        ckpt.save_checkpoint(out, method=method, optimizer=optimizer, config=config, epoch=epoch,
                             step=epoch * 10, rng=[ckpt.get_rng_states()])
        times.append(time.perf_counter() - start)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file() and not f.is_symlink())
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--methods", default="small_cnn,resnet18", help="backbones of the DINO methods")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--out", default=None, help="folder to save into (default: a temporary one)")
    ap.add_argument("--label", default="", help="before / after, printed in the table")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    base = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="bench-ckpt-"))
    layout = "generations" if hasattr(ckpt, "find_checkpoint") else "flat"
    print(f"# checkpoint write time ({args.label or layout})\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} | {machine_line()} | loadavg {os.getloadavg()}")
    print(f"deepclust from {Path(deepclust.__file__).parent} (layout: {layout})\n")
    print("| method | layout | checkpoint MB | median s | min s | max s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    rows = []
    for backbone in args.methods.split(","):
        method, optimizer, config = build(backbone, args.image_size)
        out = base / backbone
        shutil.rmtree(out, ignore_errors=True)
        r = time_saves(method, optimizer, config, out, args.repeats)
        rows.append({"method": f"dino/{backbone}", "layout": layout, **r})
        print(f"| dino/{backbone} | {layout} | {r['bytes'] / 2**20:.1f} | {r['median_s']:.3f} | "
              f"{r['min_s']:.3f} | {r['max_s']:.3f} |")
    if not args.out:
        shutil.rmtree(base, ignore_errors=True)
    print("\n" + json.dumps({"label": args.label, "layout": layout, "repeats": args.repeats, "rows": rows,
                             "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
