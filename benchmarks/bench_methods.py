"""Train each method with its recipe and measure clustering quality and speed.

For every recipe: train with the one loop (deepclust.train.loop.train), embed the images
with the trained method's encoder, and cluster with the one clustering function
(deepclust.cluster.cluster_embeddings, k = cfg.k, 10 restarts) three ways: the run's own
setting (`cluster_whiten_dim`: what `deepclust train`, `cluster --model RUN` and
DeepClusterer report), plain L2 and 24-d PCA whitening -> ACC / NMI / ARI, k-NN accuracy
(k=20, cosine, 80/20 split), the method's own k-way head when it has one, epochs, wall time
and training images/s. The raw-pixel k-means baseline is measured on the same data. Writes a
Markdown table.

    python benchmarks/bench_methods.py                       # the three digits recipes
    python benchmarks/bench_methods.py --recipes digits_ibot digits_dinov2 digits_dac --seeds 0 1 2
    python benchmarks/bench_methods.py --recipes cifar10_dino --data cifar10:test
    python benchmarks/bench_methods.py --out benchmarks/results/methods.md
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deepclust.cluster import cluster_embeddings, l2_normalize
from deepclust.data.store import load_images
from deepclust.evaluate.knn import knn_accuracy
from deepclust.evaluate.metrics import clustering_metrics
from deepclust.models.encoder import embed_with_head
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from machine import machine_line

DEFAULT_RECIPES = ["digits_deepcluster", "digits_swav", "digits_dino"]
WHITEN_DIM = 24


def knn_split(emb: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    order = np.random.default_rng(seed).permutation(len(emb))
    cut = int(0.8 * len(emb))
    tr, te = order[:cut], order[cut:]
    return knn_accuracy(emb[tr], labels[tr], emb[te], labels[te], k=20)


def run_recipe(recipe: str, data: str | None, threads: int, overrides: list[str], seed: int | None) -> dict:
    cfg = TrainConfig.load(recipe, sets=overrides)
    if seed is not None:
        cfg.seed = seed
    if data:
        cfg.data = data
    store = load_images(cfg.data, size=cfg.image_size, progress=False)
    torch.manual_seed(cfg.seed)
    method = build_method_from_config(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        train(cfg, store, Path(tmp) / "run", method=method, progress=False)
        wall = time.perf_counter() - start
        with open(Path(tmp) / "run" / "log.csv") as f:
            rows = list(csv.DictReader(f))
    emb, logits = embed_with_head(method.encoder(), store.images, head=method.cluster_head())
    labels = np.asarray(store.labels)

    def quality(whiten_dim: int) -> dict:
        clustering = cluster_embeddings(emb, cfg.k, spherical=True, whiten_dim=whiten_dim, n_init=10, seed=cfg.seed)
        return clustering_metrics(labels, clustering.labels)

    own, m, mw = quality(cfg.cluster_whiten_dim), quality(0), quality(WHITEN_DIM)
    emb = l2_normalize(emb)
    result = {
        "recipe": recipe, "method": cfg.method, "backbone": cfg.backbone, "size": cfg.image_size,
        "epochs": cfg.epochs, "seed": cfg.seed, "acc_run": own["acc"], "nmi_run": own["nmi"], "ari_run": own["ari"],
        "acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"],
        "acc_w": mw["acc"], "nmi_w": mw["nmi"], "ari_w": mw["ari"],
        "knn": knn_split(emb, labels, cfg.seed),
        "head_acc": (clustering_metrics(labels, logits.argmax(1))["acc"] if logits is not None else None),
        "train_s": wall, "images_per_s": float(np.mean([float(r["images_per_s"]) for r in rows])),
        "final_loss": float(rows[-1]["loss"]),
    }
    print(json.dumps(result), flush=True)
    return result


def raw_baseline(data: str, size: int, k: int) -> dict:
    store = load_images(data, size=size, progress=False)
    x = np.asarray(store.images, dtype=np.float32).reshape(len(store.images), -1) / 255.0
    m = clustering_metrics(store.labels, cluster_embeddings(x, k, spherical=False, n_init=10, seed=0).labels)
    mw = clustering_metrics(store.labels, cluster_embeddings(x, k, whiten_dim=WHITEN_DIM, n_init=10, seed=0).labels)
    return {"recipe": f"raw pixels ({size}px) + k-means", "acc_run": m["acc"], "nmi_run": m["nmi"],
            "ari_run": m["ari"], "acc": m["acc"], "nmi": m["nmi"], "ari": m["ari"],
            "acc_w": mw["acc"], "nmi_w": mw["nmi"], "ari_w": mw["ari"],
            "knn": knn_split(l2_normalize(x), np.asarray(store.labels))}


def fmt(v, digits=3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def to_markdown(results: list[dict], baseline: dict, command: str, threads: int, load_start: str = "-") -> str:
    lines = [
        "# Methods on digits: clustering quality and training speed",
        "",
        f"Command: `{command}`",
        f"Machine: {machine_line()}, Python {platform.python_version()}. Date: {time.strftime('%Y-%m-%d %H:%M')}. "
        f"{threads} torch thread(s); load average at the start {load_start}. Quality figures do not "
        "depend on the load; wall times and img/s do (re-measure them on an idle machine).",
        "",
        "All clusterings: `deepclust.cluster.cluster_embeddings` (k=10, 10 restarts). run ACC/NMI/ARI: "
        "the run's own setting (`cluster_whiten_dim`; what `deepclust train`, `cluster --model RUN` "
        "and DeepClusterer report); ACC/NMI/ARI: cosine k-means on the L2-normalised embeddings of the "
        "trained method (DINO, iBOT, DINOv2: teacher backbone; DAC: the trunk under its head); "
        f"ACC_w/NMI_w: the same after {WHITEN_DIM}-d PCA whitening + "
        "L2; raw pixels: Euclidean k-means; k-NN: 20-NN cosine vote, 80/20 split; head ACC: argmax of "
        "the method's own k-way head (`cluster_head`: DAC's softmax head) when it has one. Wall time = the whole "
        "`train()` call (including per-epoch k-means for DeepCluster and the loop's collapse watch).",
        "",
        "| recipe | seed | epochs | run ACC | run NMI | run ARI | ACC | NMI | ARI | ACC_w | NMI_w | ARI_w | k-NN "
        "| head ACC | train s | img/s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {baseline['recipe']} | - | - | {fmt(baseline['acc_run'])} | {fmt(baseline['nmi_run'])} | "
        f"{fmt(baseline['ari_run'])} | {fmt(baseline['acc'])} | {fmt(baseline['nmi'])} | "
        f"{fmt(baseline['ari'])} | {fmt(baseline['acc_w'])} | {fmt(baseline['nmi_w'])} | {fmt(baseline['ari_w'])} | "
        f"{fmt(baseline['knn'])} | - | - | - |",
    ]
    for r in results:
        lines.append(
            f"| {r['recipe']} | {r['seed']} | {r['epochs']} | {fmt(r['acc_run'])} | {fmt(r['nmi_run'])} | "
            f"{fmt(r['ari_run'])} | {fmt(r['acc'])} | {fmt(r['nmi'])} | {fmt(r['ari'])} | "
            f"{fmt(r['acc_w'])} | {fmt(r['nmi_w'])} | {fmt(r['ari_w'])} | {fmt(r['knn'])} | {fmt(r['head_acc'])} | "
            f"{r['train_s']:.0f} | {r['images_per_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=DEFAULT_RECIPES)
    parser.add_argument("--data", default=None, help="override the recipes' data spec")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="key=value override for every recipe")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: no oversubscription when the CPU is shared)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[None], help="train each recipe once per seed")
    parser.add_argument("--out", default=None, help="write the Markdown table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    results = [run_recipe(r, args.data, args.threads, args.sets, seed) for r in args.recipes for seed in args.seeds]
    first = TrainConfig.load(args.recipes[0])
    baseline = raw_baseline(args.data or first.data, 8 if (args.data or first.data) == "digits" else first.image_size,
                            first.k)
    command = "python benchmarks/bench_methods.py " + " ".join(
        ["--recipes", *args.recipes] + (["--data", args.data] if args.data else [])
        + (["--seeds", *map(str, args.seeds)] if args.seeds != [None] else [])
        + sum((["--set", s] for s in args.sets), []))
    table = to_markdown(results, baseline, command.strip(), args.threads, load_start)
    print(table)
    if args.out:
        Path(args.out).write_text(table)


if __name__ == "__main__":
    main()
