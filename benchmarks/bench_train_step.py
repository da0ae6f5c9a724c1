"""Training-step throughput of the one loop, where the time goes, and how much of the machine it uses.

For each (method, backbone, amp, memory format) at --size px: build the real method, run the
loop's step on random uint8 batches -- `collate` (the views), the `StepModule` forward under
autocast, backward, per-parameter clipping, the optimiser (AdamW, foreach), the EMA of the
method's pairs -- and report

  images/s            timed over --steps steps after --warmup steps
  stage split         augmentation (collate), forward, backward, optimiser (clip + step),
                      EMA (teacher update + after-step hooks), feed (BatchFeeder gathering a
                      batch from the uint8 store), each in % of the step
  GFLOP/step          forward + backward, counted by torch.utils.flop_counter.FlopCounterMode
  model GFLOP/s       GFLOP/step x steps/s, and in % of the float32 and of the bfloat16 matmul
                      peaks measured in the same run (benchmarks/machine.py `matmul_peaks`)

Example (the lead runs it alone on the machine):
  python benchmarks/bench_train_step.py --methods dino swav --backbones small_cnn resnet18 vit_tiny \\
      --amp off bf16 --channels-last auto --batch-size 64 --steps 5 --out benchmarks/results/train_step.md
Smoke (seconds):
  python benchmarks/bench_train_step.py --methods dino --backbones small_cnn --size 16 --batch-size 8 \\
      --steps 1 --matmul-n 256
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from deepclust.core.device import amp_dtype as amp_dtype_for
from deepclust.core.device import autocast
from deepclust.core.ema import ema_update_
from deepclust.methods.config import MethodConfigError
from deepclust.methods.state import TrainContext
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.feed import BatchFeeder
from deepclust.train.optim import build_optimizer, set_step_hyperparameters
from deepclust.train.step import Schedules, StepModule, clip_gradients_

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from machine import best_peaks, machine_line, matmul_peaks  # noqa: E402

# Heads sized for a small machine; the views are each method's defaults (multi-crop).
METHOD_KWARGS = {
    "dino": {"out_dim": 4096, "hidden_dim": 512, "bottleneck_dim": 128},
    "swav": {"n_prototypes": 300, "hidden_dim": 512, "out_dim": 128},
    "deepcluster": {},
    "dac": {},
    "ibot": {"out_dim": 1024, "hidden_dim": 256, "bottleneck_dim": 64},
    "dinov2": {"out_dim": 1024, "patch_out_dim": 1024, "hidden_dim": 256, "bottleneck_dim": 64},
}
STAGES = ("augment", "forward", "backward", "optimizer", "ema", "feed")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _build(method_name: str, backbone: str, size: int, batch: int, amp: str, channels_last: bool,
           device: torch.device) -> tuple:
    kwargs = {"channels_last": True} if channels_last else {}
    cfg = TrainConfig(method=method_name, backbone=backbone, backbone_kwargs=kwargs,
                      method_kwargs=METHOD_KWARGS.get(method_name, {}), image_size=size, batch_size=batch, epochs=1,
                      optimizer="adamw", clip_grad=3.0, amp=amp)
    torch.manual_seed(0)
    method = build_method_from_config(cfg).to(device)
    return cfg, method, amp_dtype_for(cfg.amp, device, backbone, size)


def bench(method_name: str, backbone: str, device: torch.device, *, size: int, batch: int, steps: int,
          warmup: int, amp: str, channels_last: bool) -> dict:
    cfg, method, amp_dtype = _build(method_name, backbone, size, batch, amp, channels_last, device)
    n_steps = steps + warmup + 1
    images = np.random.default_rng(0).integers(0, 256, (batch * n_steps, size, size, 3), dtype=np.uint8)
    ctx = TrainContext(epoch=0, step=0, steps_per_epoch=n_steps, total_epochs=1, device=device, images=images,
                       labels=None, batch_size=batch, amp_dtype=amp_dtype)
    ctx.embed_all = lambda: np.random.default_rng(0).normal(size=(len(images), 32)).astype(np.float32)
    method.on_train_start(ctx)
    method.on_epoch_start(ctx)
    optimizer = build_optimizer(cfg.optimizer, method.parameter_groups(cfg.weight_decay), lr=1e-4)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model = StepModule(method)
    schedules = Schedules.build(method, lr=1e-4, min_lr=1e-6, warmup_epochs=0, weight_decay=0.04,
                                weight_decay_end=0.04, epochs=1, steps_per_epoch=n_steps)
    times: dict[str, float] = defaultdict(float)

    def timed(stage: str, fn):  # type: ignore[no-untyped-def]
        sync(device)
        t = time.perf_counter()
        out = fn()
        sync(device)
        times[stage] += time.perf_counter() - t
        return out

    def step(i: int) -> None:  # the loop's step (train.step.optimizer_step), stage by stage
        state = schedules.state(0, i)
        raw = {"images": torch.from_numpy(images[i * batch:(i + 1) * batch]).to(device),
               "index": torch.arange(i * batch, (i + 1) * batch, device=device)}
        with torch.no_grad(), autocast(device, amp_dtype):
            collated = timed("augment", lambda: method.collate(raw, state))
        with autocast(device, amp_dtype):
            loss, _ = timed("forward", lambda: model(collated, state))
        set_step_hyperparameters(optimizer, state.lr, state.weight_decay)
        optimizer.zero_grad(set_to_none=True)
        timed("backward", loss.backward)
        timed("optimizer", lambda: (clip_gradients_(params, cfg.clip_grad), optimizer.step()))

        def ema() -> None:
            for teacher, student in method.ema_pairs():
                ema_update_(teacher, student, state.teacher_momentum)
            method.after_optimizer_step(state)
        timed("ema", ema)

    with FlopCounterMode(display=False) as counter:
        step(0)
    flops_per_step = counter.get_total_flops()
    for i in range(1, warmup + 1):
        step(i)
    times.clear()
    t = time.perf_counter()
    for i in range(warmup + 1, n_steps):
        step(i)
    seconds = (time.perf_counter() - t) / steps
    order = np.arange(batch * steps).reshape(steps, batch)
    feed_start = time.perf_counter()
    for _ in BatchFeeder(images, order, device, prefetch=0):
        pass
    times["feed"] = time.perf_counter() - feed_start   # the loop overlaps this with the step (a thread)
    return {"method": method_name, "backbone": backbone, "batch": batch, "size": size,
            "views": getattr(getattr(method, "views", None), "n_views", ""), "amp": str(amp_dtype).replace(
                "torch.", "") if amp_dtype else "off", "channels_last": channels_last,
            "images_per_s": batch / seconds, "gflop_per_step": flops_per_step / 1e9,
            "model_gflops": flops_per_step / seconds / 1e9,
            "split": {k: times[k] / steps / seconds for k in STAGES}}


def table(rows: list[dict], peaks: dict[str, float]) -> list[str]:
    head = ("| method | backbone | batch | views | amp | channels_last | images/s | GFLOP/step | model GFLOP/s "
            "| % fp32 peak | % bf16 peak | " + " | ".join(STAGES) + " |")
    lines = [head, "| " + " | ".join(["---"] * (13 + len(STAGES) - 1)) + " |"]
    for r in rows:
        split = " | ".join(f"{100 * r['split'][k]:.0f}%" for k in STAGES)
        lines.append(f"| {r['method']} | {r['backbone']} | {r['batch']} | {r['views']} | {r['amp']} | "
                     f"{'yes' if r['channels_last'] else 'no'} | {r['images_per_s']:.1f} | {r['gflop_per_step']:.2f} | "
                     f"{r['model_gflops']:.1f} | {100 * r['model_gflops'] * 1e9 / peaks['fp32']:.0f}% | "
                     f"{100 * r['model_gflops'] * 1e9 / peaks['bf16']:.0f}% | {split} |")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["dino", "swav"])
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "resnet18", "vit_tiny"])
    p.add_argument("--device", default="auto")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--amp", nargs="+", default=["auto"], help="one or more of auto off bf16")
    p.add_argument("--channels-last", nargs="+", default=["auto"],
                   help="auto (conv nets: on), on, off; several to compare")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--matmul-n", type=int, default=None, help="matmul size (default 2048 CPU, 8192 CUDA)")
    p.add_argument("--out", default=None, help="write a markdown table here (and the rows as JSON beside it)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    n = args.matmul_n or (8192 if device.type == "cuda" else 2048)
    before = matmul_peaks(n, device=device)
    rows: list[dict] = []
    skipped: set[tuple[str, str]] = set()
    for m in args.methods:
        for b in args.backbones:
            vit = b.startswith("vit")
            for amp in args.amp:
                for cl in args.channels_last:
                    use_cl = (not vit) if cl == "auto" else (cl == "on" and not vit)
                    if (vit and cl == "on") or (m, b) in skipped:
                        continue
                    try:
                        row = bench(m, b, device, size=args.size, batch=args.batch_size, steps=args.steps,
                                    warmup=args.warmup, amp=amp, channels_last=use_cl)
                    except MethodConfigError as err:  # e.g. iBOT on a conv net: not a combination
                        print(f"{m:6s} {b:10s} skipped: {err}", flush=True)
                        skipped.add((m, b))
                        continue
                    rows.append(row)
                    print(f"{m:6s} {b:10s} {row['amp']:5s} cl={int(use_cl)} {row['images_per_s']:8.1f} img/s "
                          + " ".join(f"{k} {100 * v:.0f}%" for k, v in row["split"].items()), flush=True)
    peaks = best_peaks(before, matmul_peaks(n, device=device))
    lines = ["# Training step throughput", "", f"Command: `python {' '.join(sys.argv)}`  ",
             f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}  ",
             f"Machine: {machine_line(peaks)} (device {device}, matmul {n}x{n}, best of before/after)  ", "",
             "Step = the loop's step stage by stage (collate = the views; forward on every view under autocast; "
             "backward; per-parameter clipping + AdamW; EMA teacher update and after-step hooks); feed = "
             "BatchFeeder gathering the batches from the uint8 store (the loop does it in a thread, beside the "
             "step). FLOPs by `FlopCounterMode` (matmuls/convolutions, forward + backward).", ""]
    lines += table(rows, peaks)
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
        with open(args.out.rsplit(".", 1)[0] + ".json", "w") as fh:
            json.dump({"peaks": peaks, "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
