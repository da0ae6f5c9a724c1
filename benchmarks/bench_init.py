"""Issue 14 (``--init``): training speed of a ViT-S/14-shaped backbone, and CIFAR-10 quality of a
run continued from a previous deepclust run vs one started from scratch with the same budget.

``speed``: DINO steps (the one training loop, `deepclust.train.loop.train`, two global crops of
S px and ``--n-local`` local crops of 96/224 S aligned to patch 14, the paper's 65536-output
head) with a ViT shaped like ViT-S/14 (embed 384, depth 12, 6 heads, patch 14, random weights:
the speed of an ``--init`` run is that of its architecture) at each ``--sizes`` and precision (fp32, bf16 autocast);
images/s is the loop's own ``images_per_s`` (the steps of one epoch, first step included).

``cifar``: run A = the recipe from scratch for ``--epochs`` on ``--train-images`` CIFAR-10
train images; run B = the same budget from scratch with another seed; run C = ``--init A`` for
the same budget (A's backbone, fresh heads, head warm-up, the --init adaptation defaults).
Each run is evaluated on the test split: k-means ACC (k = 10, the run's own clustering
settings) and 20-NN accuracy with the train images as the labelled bank.

Commands (the lead re-measures speed alone; quality figures do not depend on load):
    nice -n 5 python benchmarks/bench_init.py speed --threads 2 --steps 4 --batch 8 --sizes 224 98
    nice -n 5 python benchmarks/bench_init.py cifar --threads 1 --train-images 10000 --epochs 2 \\
        --out /tmp/bench_init
Smoke (seconds):
    python benchmarks/bench_init.py speed --steps 1 --batch 2 --sizes 28 --depth 2 --n-local 0 --out-dim 256
    python benchmarks/bench_init.py cifar --train-images 256 --test-images 256 --epochs 1 --out /tmp/bi
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deepclust.train.config import TrainConfig  # noqa: E402
from deepclust.train.init_from import resolve_init  # noqa: E402
from deepclust.train.loop import train  # noqa: E402
from machine import machine_line, matmul_peaks  # noqa: E402


def _last_row(run_dir: Path) -> dict[str, str]:
    with (run_dir / "log.csv").open() as fh:
        return list(csv.DictReader(fh))[-1]


def speed(args: argparse.Namespace) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    for size in args.sizes:
        store = SimpleNamespace(images=rng.integers(0, 256, (args.batch * args.steps, size, size, 3), dtype=np.uint8),
                                labels=None)
        for amp in ("off", "bf16"):
            cfg = TrainConfig(method="dino", backbone="vit", image_size=size, epochs=1, batch_size=args.batch,
                              backbone_kwargs={"embed_dim": 384, "depth": args.depth, "num_heads": 6, "patch_size": 14},
                              method_kwargs={"out_dim": args.out_dim, "augment": {"n_local": args.n_local}},
                              amp=amp, knn_every=0, monitor_samples=args.batch, collapse_check=False, num_workers=0,
                              device="cpu", torch_threads=args.threads)
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                train(cfg, store, Path(tmp) / "run", progress=False)
                wall = time.perf_counter() - start
                row = _last_row(Path(tmp) / "run")
            rows.append({"size": size, "precision": "fp32" if amp == "off" else "bf16 autocast",
                         "batch": args.batch, "n_local": args.n_local, "steps": args.steps,
                         "images_per_s": float(row["images_per_s"]), "wall_s": round(wall, 1)})
            print(rows[-1], flush=True)
    return rows


def _stores(args: argparse.Namespace):
    from deepclust.data.store import load_images

    train_store = load_images(str(Path(args.cifar) / "train"), size=32, progress=False)
    test_store = load_images(str(Path(args.cifar) / "test"), size=32, progress=False)

    def subset(store, n: int, seed: int):
        idx = np.sort(np.random.default_rng(seed).choice(len(store.images), min(n, len(store.images)), replace=False))
        return SimpleNamespace(images=np.ascontiguousarray(store.images[idx]), labels=np.asarray(store.labels)[idx])

    return subset(train_store, args.train_images, 0), subset(test_store, args.test_images, 1)


def evaluate(run_dir: Path, train_store, test_store) -> dict[str, float]:
    from deepclust.cluster import cluster_embeddings
    from deepclust.evaluate.knn import knn_accuracy
    from deepclust.evaluate.metrics import clustering_metrics
    from deepclust.features import embed_store, load_model

    loaded = load_model(str(run_dir), device="cpu")
    test = embed_store(loaded, test_store, batch_size=512, cache=False, progress=False).features
    bank = embed_store(loaded, train_store, batch_size=512, cache=False, progress=False).features
    labels = cluster_embeddings(test, 10, spherical=loaded.spherical, whiten_dim=loaded.whiten_dim, seed=0).labels
    m = clustering_metrics(test_store.labels, labels)
    return {"kmeans_acc": m["acc"], "nmi": m["nmi"],
            "knn_acc": knn_accuracy(bank, train_store.labels, test, test_store.labels, k=20)}


def cifar(args: argparse.Namespace) -> list[dict]:
    train_store, test_store = _stores(args)
    out = Path(args.out)
    base = TrainConfig.load(args.config, overrides={"epochs": args.epochs, "knn_every": 0, "device": "cpu",
                                                    "torch_threads": args.threads, "data": "cifar10-subset",
                                                    "collapse_check": False})
    if args.batch:
        base = TrainConfig.from_dict({**base.to_dict(), "batch_size": args.batch})
    runs = {"A": ("A: scratch", {}), "B": ("B: scratch, seed 1", {"seed": 1}),
            "C": ("C: --init A", {"init": str(out / "A")}),
            "D": ("D: --init A, lr x1", {"init": str(out / "A"), "init_lr_scale": 1.0}),
            "E": ("E: --init A, no head warm-up", {"init": str(out / "A"), "init_head_warmup_steps": 0})}
    rows = []
    for tag in args.runs:
        name, change = runs[tag]
        cfg = resolve_init(TrainConfig.from_dict({**base.to_dict(), **change}), given={"image_size"})
        start = time.perf_counter()
        if not (out / tag / "state.json").exists():  # a run already there (e.g. A for --runs D) is evaluated
            train(cfg, train_store, out / tag, progress=args.progress)
        wall = time.perf_counter() - start
        row = {"run": name, "epochs": cfg.epochs, "train_images": len(train_store.images), "wall_s": round(wall, 1),
               "images_per_s": float(_last_row(out / tag)["images_per_s"]),
               **evaluate(out / tag, train_store, test_store),
               "loadavg": " / ".join(f"{v:.2f}" for v in os.getloadavg())}
        if change.get("init"):
            row.update(init_lr_scale=cfg.init_lr_scale, layer_decay=cfg.layer_decay,
                       head_warmup_steps=cfg.init_head_warmup_steps)
        rows.append(row)
        print(row, flush=True)
    return rows


def markdown(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join(f"{r.get(k):.4f}" if isinstance(r.get(k), float) and k.endswith("acc")
                                        or k == "nmi" else str(r.get(k, "")) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--sizes", type=int, nargs="+", default=[224, 98])
    s.add_argument("--batch", type=int, default=8)
    s.add_argument("--steps", type=int, default=4)
    s.add_argument("--depth", type=int, default=12)
    s.add_argument("--n-local", type=int, default=6)
    s.add_argument("--out-dim", type=int, default=65536, help="DINO head outputs (the paper's 65536)")
    c = sub.add_parser("cifar")
    c.add_argument("--cifar", default="/tmp/cifar10")
    c.add_argument("--config", default="cifar10_cpu_dino")
    c.add_argument("--train-images", type=int, default=10000)
    c.add_argument("--test-images", type=int, default=10000)
    c.add_argument("--epochs", type=int, default=4)
    c.add_argument("--batch", type=int, default=0, help="0: the recipe's")
    c.add_argument("--out", required=True)
    c.add_argument("--progress", action="store_true")
    c.add_argument("--runs", default="ABC",
                   help="which of A, B, C, D, E (D: --init A at the full lr; E: without the head warm-up)")
    for q in (s, c):
        q.add_argument("--threads", type=int, default=1)
        q.add_argument("--json", default=None, help="also write the rows here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    header = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
              f"{machine_line(matmul_peaks(1024))}; command: {' '.join(sys.argv)}")
    rows = speed(args) if args.what == "speed" else cifar(args)
    print(header)
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
