"""Embedding throughput of pretrained ViTs on this machine, against its measured FLOP/s.

    python benchmarks/bench_embed.py [--images 64] [--cifar /tmp/cifar10/test] [--out benchmarks/results/pretrained.md]

1. Achievable float32 FLOP/s: a large square matmul (2 n^3 FLOPs), best of a few runs.
2. Per model (random weights, saved with save_pretrained and loaded through the real
   ``hf:<dir>`` path): FLOPs per image counted with ``torch.utils.flop_counter.FlopCounterMode``,
   images/s of ``encoder.embed`` (uint8 in: preprocessing + forward), and the share of the
   matmul FLOP/s that this is.
   * tiny DINOv2 (32-d, 2 layers, 32 px, 8 px patches) - the test model;
   * ViT-S/14-shaped DINOv2 (384-d, 12 layers, 6 heads, 224 px, 14 px patches) = dinov2-small.
3. ``extract_features`` on a CIFAR-10 store with the ViT-S/14 model: uncached vs cached.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import matmul_flops  # noqa: E402


def save_dinov2(directory: Path, *, hidden: int, layers: int, heads: int, image: int, patch: int,
                shortest_edge: int) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model
    torch.manual_seed(0)
    cfg = Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                       intermediate_size=4 * hidden, image_size=image, patch_size=patch)
    Dinov2Model(cfg).save_pretrained(directory)
    BitImageProcessor(size={"shortest_edge": shortest_edge}, crop_size={"height": image, "width": image},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(directory)
    return directory


def flops_per_image(encoder, images: np.ndarray) -> float:
    x = encoder.pixel_values(images[:1])
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        encoder.tokens(x)
    return float(counter.get_total_flops())


def throughput(encoder, images: np.ndarray, batch_size: int) -> tuple[float, float]:
    """(images/s including preprocessing, images/s of the forward pass alone); best of 2."""
    encoder.embed(images[:batch_size], batch_size=batch_size, progress=False)  # warm-up
    best_total = best_fwd = 0.0
    for _ in range(2):
        t = time.perf_counter()
        encoder.embed(images, batch_size=batch_size, progress=False)
        best_total = max(best_total, len(images) / (time.perf_counter() - t))
        x = encoder.pixel_values(images[:batch_size])
        t = time.perf_counter()
        with torch.inference_mode():
            for _ in range(max(1, len(images) // batch_size)):
                encoder.tokens(x)
        best_fwd = max(best_fwd, batch_size * max(1, len(images) // batch_size) / (time.perf_counter() - t))
    return best_total, best_fwd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=64, help="images per throughput run (ViT-S)")
    ap.add_argument("--cifar", default="/tmp/cifar10/test", help="CIFAR-10 JPEG folder for the cache timing")
    ap.add_argument("--cifar-n", type=int, default=256, help="images of it used (a class-balanced subset)")
    ap.add_argument("--out", default="benchmarks/results/pretrained.md")
    args = ap.parse_args()

    from deepclust.models.pretrained import load_pretrained

    load_start = os.getloadavg()[0]
    machine_flops = matmul_flops(torch.float32)
    print(f"float32 matmul: {machine_flops / 1e9:.1f} GFLOP/s with {torch.get_num_threads()} threads")
    rng = np.random.default_rng(0)
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_embed_"))
    models = [
        ("tiny DINOv2 (32-d, 2 layers, 32 px / 8)",
         dict(hidden=32, layers=2, heads=2, image=32, patch=8, shortest_edge=32),
         32, 1024, 256),
        ("ViT-S/14 DINOv2 (384-d, 12 layers, 224 px / 14)", dict(hidden=384, layers=12, heads=6, image=224, patch=14,
                                                                shortest_edge=256), 96, args.images, 16),
    ]
    vits_dir = None
    for label, cfg, src_side, n, bs in models:
        d = save_dinov2(tmp / label.split()[0].replace("/", "_"), **cfg)
        if cfg["hidden"] == 384:
            vits_dir = d
        enc = load_pretrained(f"hf:{d}")
        images = rng.integers(0, 256, size=(n, src_side, src_side, 3), dtype=np.uint8)
        flops = flops_per_image(enc, images)
        total, fwd = throughput(enc, images, bs)
        share = flops * fwd / machine_flops
        rows.append((label, flops, bs, total, fwd, share))
        print(f"{label}: {flops / 1e9:.3f} GFLOPs/img, {total:.1f} img/s end-to-end, {fwd:.1f} img/s forward, "
              f"{100 * share:.0f}% of matmul FLOP/s")
        if cfg["hidden"] == 384:
            # The `resolution` option of the hf: kind: 112 px inputs, 4x fewer patch tokens.
            enc112 = load_pretrained(f"hf:{d}", resolution=112)
            flops = flops_per_image(enc112, images)
            total, fwd = throughput(enc112, images, bs)
            share = flops * fwd / machine_flops
            rows.append(("same ViT-S/14 with resolution=112", flops, bs, total, fwd, share))
            print(f"{rows[-1][0]}: {flops / 1e9:.3f} GFLOPs/img, {total:.1f} img/s, {100 * share:.0f}%")

    cache_rows = []
    if Path(args.cifar).is_dir() and vits_dir is not None:
        os.environ["DEEPCLUST_CACHE"] = str(tmp / "cache")
        from deepclust.data.store import load_images
        from deepclust.features import extract_features
        src = tmp / "cifar_subset"
        per_class = max(1, args.cifar_n // 10)
        for cls in sorted(p for p in Path(args.cifar).iterdir() if p.is_dir()):
            (src / cls.name).mkdir(parents=True)
            for f in sorted(cls.iterdir())[:per_class]:
                os.symlink(f, src / cls.name / f.name)
        store = load_images(str(src), progress=False)
        spec = f"hf:{vits_dir}"
        for label in ("uncached (embeds, writes the cache)", "cached (reads the .npy)"):
            t = time.perf_counter()
            x = extract_features(store, spec, batch_size=16, progress=False)
            cache_rows.append((label, time.perf_counter() - t, x.shape))
            print(f"extract_features {label}: {cache_rows[-1][1]:.3f} s for {x.shape}")

    lines = [
        "# Pretrained encoders: embedding throughput (benchmarks/bench_embed.py)",
        "",
        f"Command: `python benchmarks/bench_embed.py --images {args.images} --cifar-n {args.cifar_n}`  ",
        f"Machine: 2-core CPU dev machine ({platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, float32), date 2026-11-23.  ",
        "Models have random weights (same shapes and FLOPs as the released ones) and are loaded "
        "through the real `hf:<dir>` path; input is uint8 images (preprocessing included end-to-end).",
        "",
        f"Achievable float32 FLOP/s on this machine (2048x2048 matmul, best of 5): "
        f"**{machine_flops / 1e9:.1f} GFLOP/s**.",
        "",
        "| model | GFLOPs / image | batch | img/s end-to-end | img/s forward only | % of matmul FLOP/s (forward) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, flops, bs, total, fwd, share in rows:
        lines.append(f"| {label} | {flops / 1e9:.4f} | {bs} | {total:.1f} | {fwd:.1f} | {100 * share:.0f}% |")
    if cache_rows:
        lines += ["", f"`extract_features(store, 'hf:<ViT-S/14 dir>')` on {cache_rows[0][2][0]} CIFAR-10 "
                      f"test images (32 px, upsampled to 256 and cropped to 224 by the model's processor):", "",
                  "| run | seconds |", "| --- | ---: |"]
        lines += [f"| {label} | {sec:.3f} |" for label, sec, _ in cache_rows]
    load_end = os.getloadavg()[0]
    lines += ["", f"Load average (1 min) at start / end: {load_start:.1f} / {load_end:.1f} on 2 cores: the "
                  f"machine was shared with other jobs, so absolute figures vary between runs (the FLOP/s "
                  f"limit is measured in the same run, under the same load, to keep the percentage fair)."]
    lines += ["", "Notes: FLOPs are counted per image by `FlopCounterMode` (matmuls and attention; "
                  "2 FLOPs per multiply-add). The tiny model's matrices are only 32 wide, so "
                  "its figure depends mostly on per-call overhead and varies most between runs.", ""]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
