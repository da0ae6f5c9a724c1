"""Each method's default run (no recipe, no --epochs) on 10,000 small grey digits.

No MNIST here, so the data set is built from scikit-learn's 8x8 digits: each of 10,000
images is a random digit (labels kept), upsampled to 28 px, with random affine jitter
(rotation +-12 deg, scale 0.9-1.1, shear +-0.15, shift +-2 px), a random stroke thickness
(grey dilation or erosion) and a little noise -- MNIST-like in size, count and channels.
It is written as an .npz that `deepclust train --data X.npz` reads (``images`` (N, 28, 28)
uint8, ``labels`` (N,)).

Then, one method at a time, ``nice -n 5 deepclust train --method M --data X.npz --out DIR
--k 10`` (the default threads, the data-aware defaults and their default time budget), and
the raw-pixel k-means baseline (``deepclust cluster X.npz --model raw --k 10``). Reports per
method: wall time of the whole command (training + final clustering), the chosen epochs,
ACC / NMI / ARI of the run's final clustering (the defaults' SCAN head on the trained
features), ACC of k-means alone on the same features (``cluster --model RUN --head none``),
the method's own head's ACC where there is one (DAC), k-NN accuracy, and the load average
before and after (figures under load are marked).

    python benchmarks/bench_defaults.py --out benchmarks/results/defaults.md
    python benchmarks/bench_defaults.py --methods dino --n 2000 --time 2m       # quicker
Smoke (seconds):
    python benchmarks/bench_defaults.py --methods deepcluster --n 300 --time 10s --work /tmp/bd
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_line, write_report  # noqa: E402

METHODS = ["deepcluster", "swav", "dino", "dac", "ibot", "dinov2"]


def make_digits28(n: int = 10_000, size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(images (n, size, size) uint8, labels (n,))`` from scikit-learn's digits (module doc)."""
    from scipy import ndimage
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(digits.images), n)
    out = np.empty((n, size, size), dtype=np.uint8)
    inner = size - 8                                             # the digit's box, MNIST-like margins
    for j, i in enumerate(pick):
        img = ndimage.zoom(digits.images[i] / 16.0, inner / 8, order=1)
        canvas = np.zeros((size, size))
        o = (size - img.shape[0]) // 2
        canvas[o:o + img.shape[0], o:o + img.shape[1]] = img
        angle, scale = np.deg2rad(rng.uniform(-12, 12)), rng.uniform(0.9, 1.1)
        shear, shift = rng.uniform(-0.15, 0.15), rng.uniform(-2, 2, 2)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        m = np.linalg.inv(rot @ np.array([[1, shear], [0, 1]]) * scale)
        c = np.array([size / 2, size / 2])
        canvas = ndimage.affine_transform(canvas, m, offset=c - m @ (c + shift), order=1)
        thick = rng.integers(-1, 2)
        if thick > 0:
            canvas = ndimage.grey_dilation(canvas, size=2)
        elif thick < 0:
            canvas = ndimage.grey_erosion(canvas, size=2) * 0.5 + canvas * 0.5
        canvas = np.clip(canvas * 1.1 + rng.normal(0, 0.03, canvas.shape), 0, 1)
        out[j] = np.round(canvas * 255).astype(np.uint8)
    return out, digits.target[pick].astype(np.int64)


def run(cmd: list[str], log: Path) -> tuple[int, float]:
    start = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.call(["nice", "-n", "5", *cmd], stdout=fh, stderr=subprocess.STDOUT)
    return rc, time.perf_counter() - start


def metrics(out: Path) -> dict:
    path = out / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--n", type=int, default=10_000, help="images in the generated set")
    p.add_argument("--time", default=None, help="pass --time to every run (default: the defaults' own budget)")
    p.add_argument("--work", default="/tmp/bench_defaults", help="data and run folders")
    p.add_argument("--out", default=None, help="write the Markdown table here (and JSON beside it)")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"digits28_{args.n}.npz"
    if not data.is_file():
        images, labels = make_digits28(args.n)
        np.savez_compressed(data, images=images, labels=labels)
    exe = [sys.executable, "-m", "deepclust"]
    rows = []
    raw_out = work / "raw"
    load0 = os.getloadavg()
    rc, wall = run([*exe, "cluster", str(data), "--model", "raw", "--k", "10", "--out", str(raw_out), "--quiet"],
                   work / "raw.log")
    rows.append({"method": "raw pixels (k-means)", "rc": rc, "wall_s": wall, "load_before": load0,
                 "load_after": os.getloadavg(), **{k: metrics(raw_out).get(k) for k in ("acc", "nmi", "ari",
                                                                                           "knn_acc")}})
    for method in args.methods:
        out = work / f"run_{method}"
        if out.exists():
            subprocess.call(["rm", "-rf", str(out)])
        load0 = os.getloadavg()
        cmd = [*exe, "train", "--method", method, "--data", str(data), "--out", str(out), "--k", "10", "--quiet"]
        rc, wall = run(cmd + (["--time", args.time] if args.time else []), work / f"{method}.log")
        m = metrics(out)
        cfg = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else {}
        final = (m.get("cluster_head") or {}).get("kind", "k-means")
        kmeans_acc = m.get("acc")
        if final != "k-means" and rc == 0:   # the same embeddings with k-means alone, for comparison
            plain = work / f"kmeans_{method}"
            run([*exe, "cluster", str(data), "--model", str(out), "--k", "10", "--head", "none", "--out",
                 str(plain), "--quiet", "--no-report"], work / f"kmeans_{method}.log")
            kmeans_acc = metrics(plain).get("acc")
        rows.append({"method": method, "rc": rc, "wall_s": wall, "epochs": cfg.get("epochs"),
                     "budget": cfg.get("time_budget"), "backbone": cfg.get("backbone"),
                     "batch": cfg.get("batch_size"), "load_before": load0, "load_after": os.getloadavg(),
                     "final": final, "kmeans_acc": kmeans_acc,
                     **{k: m.get(k) for k in ("acc", "nmi", "ari", "knn_acc", "head_acc")}})
        print(json.dumps(rows[-1]), flush=True)

    def f(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else ("" if v is None else str(v))

    lines = ["# Default runs on 10,000 28 px grey digits", "", f"Command: `python {' '.join(sys.argv)}`  ",
             f"Date: {datetime.datetime.now().isoformat('T', 'seconds')}  ", f"Machine: {machine_line()}  ",
             f"Data: {args.n} digits built from scikit-learn's 8x8 digits (bench_defaults.make_digits28), {data}", "",
             "| method | backbone | batch | budget | epochs | wall s (train + cluster) | final clustering | ACC | NMI "
             "| ARI | k-means ACC | k-NN | method head ACC | load before / after |",
             "| --- | --- | ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        load = f"{r['load_before'][0]:.1f} / {r['load_after'][0]:.1f}"
        lines.append(f"| {r['method']}{'' if r['rc'] == 0 else ' (failed)'} | {f(r.get('backbone'))} | "
                     f"{f(r.get('batch'))} | {f(r.get('budget'))} | {f(r.get('epochs'))} | {r['wall_s']:.0f} | "
                     f"{f(r.get('final', 'k-means'))} | {f(r.get('acc'))} | {f(r.get('nmi'))} | {f(r.get('ari'))} | "
                     f"{f(r.get('kmeans_acc', r.get('acc')))} | {f(r.get('knn_acc'))} | {f(r.get('head_acc'))} | "
                     f"{load} |")
    write_report("\n".join(lines) + "\n", rows, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
