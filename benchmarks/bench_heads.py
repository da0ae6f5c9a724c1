"""Clustering heads and k from the data: k-means vs SCAN vs SCAN + self-label, and --k auto.

For each feature set (digits raw pixels, digits PCA-50, optionally a trained run's features
via ``--model RUN``; CIFAR-10 test raw / PCA with ``--cifar``), loaded through the one path
(load_images -> load_model -> embed_store) and clustered through the one clustering function
(cluster_embeddings, k = 10): ACC / NMI / ARI and the wall time of each stage (features,
k-means, neighbour mining, heads, self-labelling), for every seed; then the k that
``k="auto"`` (silhouette of k-means over ``--k-range``) chooses, with and without a PCA
reduction (and UMAP with ``--umap``, when umap-learn is installed). Prints a Markdown table
and the machine (date, cores, load average); ``--json`` writes everything.

    python benchmarks/bench_heads.py                                   # digits, seeds 0 1 2
    python benchmarks/bench_heads.py --cifar --umap --json benchmarks/results/heads.json
    python benchmarks/bench_heads.py --model runs/digits_dino --seeds 0
    python benchmarks/bench_heads.py --n 300 --seeds 0 --epochs 5 --k-range 2:12 --temi-size 500x32  # smoke
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deepclust.cluster import cluster_embeddings  # noqa: E402
from deepclust.data.store import load_images  # noqa: E402
from deepclust.evaluate.metrics import clustering_metrics  # noqa: E402
from deepclust.features import embed_store, load_model  # noqa: E402
from machine import machine_line  # noqa: E402


def features(data: str, spec: str, n: int | None, seed: int) -> tuple[str, np.ndarray, np.ndarray, Any, float]:
    store = load_images(data, progress=False)
    loaded = load_model(spec, device="cpu", image_size=int(store.images.shape[1]), seed=seed)
    tick = time.perf_counter()
    x = embed_store(loaded, store, progress=False, cache=False).features
    seconds = time.perf_counter() - tick
    y = np.asarray(store.labels)
    if n is not None and n < len(x):
        keep = np.random.default_rng(seed).permutation(len(x))[:n]
        x, y = x[keep], y[keep]
    return f"{data} {spec}", x, y, loaded, seconds


def quality(y: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    m = clustering_metrics(y, labels)
    return {key: round(float(m[key]), 4) for key in ("acc", "nmi", "ari")}


def compare(name: str, x: np.ndarray, y: np.ndarray, loaded: Any, seed: int, epochs: int) -> list[dict[str, Any]]:
    space = dict(spherical=loaded.spherical, whiten_dim=loaded.whiten_dim, seed=seed)
    rows = []
    tick = time.perf_counter()
    km = cluster_embeddings(x, 10, **space)
    rows.append({"features": name, "seed": seed, "clustering": "k-means", **quality(y, km.labels),
                 "seconds": {"kmeans": round(time.perf_counter() - tick, 2)}})
    for label, self_label in (("SCAN", False), ("SCAN + self-label", True)):
        c = cluster_embeddings(x, 10, **space, head="scan", labels_true=y,
                               head_options={"epochs": epochs, "self_label": self_label})
        assert c.head is not None
        rows.append({"features": name, "seed": seed, "clustering": label, **quality(y, c.labels),
                     "purity": round(c.head.neighbour_purity or 0.0, 4), "min_size": min(c.sizes()),
                     "seconds": {k: round(v, 2) for k, v in c.head.seconds.items()}})
    return rows


def auto_k(name: str, x: np.ndarray, loaded: Any, k_range: str, umap: bool) -> list[dict[str, Any]]:
    out = []
    for reduce in [None, "pca"] + (["umap"] if umap else []):
        tick = time.perf_counter()
        c = cluster_embeddings(x, "auto", spherical=loaded.spherical, whiten_dim=loaded.whiten_dim,
                               reduce=reduce, k_range=k_range, n_init=3)
        assert c.k_choice is not None
        out.append({"features": name, "reduce": reduce or "none", "k": c.k_choice.k,
                    "curve": c.k_choice.info()["curve"], "seconds": round(time.perf_counter() - tick, 2)})
    return out


def temi_timing(n: int, dim: int, seed: int) -> dict[str, Any]:
    """Wall time of TEMI (defaults) on random ``n x dim`` features: the 'seconds to minutes' claim."""
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    tick = time.perf_counter()
    c = cluster_embeddings(x, 10, head="temi", seed=seed)
    assert c.head is not None
    return {"n": n, "dim": dim, "seconds": round(time.perf_counter() - tick, 2),
            "stages": {k: round(v, 2) for k, v in c.head.seconds.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=None, help="subsample each data set to N images (smoke runs)")
    parser.add_argument("--epochs", type=int, default=100, help="SCAN epochs on the cached features")
    parser.add_argument("--model", default=None, help="a trained run directory: its features are compared too")
    parser.add_argument("--cifar", action="store_true", help="also CIFAR-10 test raw / PCA (auto-k and heads)")
    parser.add_argument("--umap", action="store_true", help="also the auto-k choice in a UMAP space")
    parser.add_argument("--k-range", default="2:30")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--temi-size", default="50000x768", help="NxD random features to time TEMI on ('' to skip)")
    parser.add_argument("--json", default=None, help="write all rows and curves here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sets = [("digits", "raw"), ("digits", "pca")] + ([("digits", args.model)] if args.model else [])
    sets += [("cifar10:test", "raw"), ("cifar10:test", "pca")] if args.cifar else []
    rows: list[dict[str, Any]] = []
    choices: list[dict[str, Any]] = []
    for data, spec in sets:
        name, x, y, loaded, seconds = features(data, spec, args.n, 0)
        for seed in args.seeds:
            for row in compare(name, x, y, loaded, seed, args.epochs):
                row["seconds"]["features"] = round(seconds, 2)
                rows.append(row)
        choices += auto_k(name, x, loaded, args.k_range, args.umap)
    timing = temi_timing(*(int(v) for v in args.temi_size.split("x")), 0) if args.temi_size else None
    print(f"# bench_heads {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n\n{machine_line()}\n")
    print("| features | seed | clustering | ACC | NMI | ARI | neighbour purity | smallest cluster | seconds |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        secs = ", ".join(f"{k} {v}" for k, v in r["seconds"].items())
        print(f"| {r['features']} | {r['seed']} | {r['clustering']} | {r['acc']} | {r['nmi']} | {r['ari']} "
              f"| {r.get('purity', '')} | {r.get('min_size', '')} | {secs} |")
    print("\n| features | reduce | k chosen (silhouette) | seconds |\n| --- | --- | --- | --- |")
    for c in choices:
        print(f"| {c['features']} | {c['reduce']} | {c['k']} | {c['seconds']} |")
    if timing:
        print(f"\nTEMI (10 heads, 100 epochs) on {timing['n']} x {timing['dim']} random features: "
              f"{timing['seconds']} s ({timing['stages']})")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "rows": rows, "auto_k": choices,
                                               "temi_timing": timing}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
