"""After training: embed the whole store, cluster it, evaluate, and write the results.

Writes into the run directory:
  assignments.csv  path, cluster (k-means on the backbone features, PCA-whitened to
                   cfg.cluster_whiten_dim dims when set, L2-normalised), label (true class, if known)
  metrics.json     k, n_images, cluster_sizes; with labels: acc, acc_many_to_one, nmi, ari,
                   knn_acc (seeded 80/20 split); with a k-way head: head_acc, head_nmi, head_ari,
                   head_n_clusters_used (argmax of `method.cluster_logits`)
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deepclust.core.io import atomic_write_bytes
from deepclust.train.config import TrainConfig
from deepclust.train.embedding import embed_images


def finalize_run(method: nn.Module, store: Any, out_dir: str | Path, cfg: TrainConfig, *,
                 device: str | torch.device = "cpu", progress: bool = True) -> dict[str, Any]:
    """Cluster the store with the trained method; write assignments.csv and metrics.json."""
    from deepclust.cluster import cluster_space, kmeans, l2_normalize

    out_dir = Path(out_dir)
    emb, logits = embed_images(method, store.images, device=device, batch_size=max(256, cfg.batch_size),
                               with_logits=True, progress=progress, desc="embed store")
    features = l2_normalize(emb)
    pred = kmeans(cluster_space(emb, cfg.cluster_whiten_dim), min(cfg.k, len(features)), seed=cfg.seed).labels
    metrics: dict[str, Any] = {
        "method": cfg.method, "backbone": cfg.backbone, "k": cfg.k, "n_images": int(len(pred)),
        "whiten_dim": cfg.cluster_whiten_dim,
        "embed_dim": int(emb.shape[1]), "cluster_sizes": np.bincount(pred, minlength=cfg.k).tolist(),
    }
    labels = getattr(store, "labels", None)
    known = labels is not None and (np.asarray(labels) >= 0).sum() > 1
    if known:
        from deepclust.evaluate.knn import knn_accuracy
        from deepclust.evaluate.metrics import clustering_metrics

        labels = np.asarray(labels)
        metrics.update(clustering_metrics(labels, pred))
        idx = np.random.default_rng([cfg.seed, 7919]).permutation(np.flatnonzero(labels >= 0))
        cut = int(round(0.8 * len(idx)))
        if 0 < cut < len(idx):
            metrics["knn_acc"] = float(knn_accuracy(features[idx[:cut]], labels[idx[:cut]], features[idx[cut:]],
                                                    labels[idx[cut:]], k=min(cfg.knn_k, cut), T=0.07))
        if logits is not None:
            head = clustering_metrics(labels, logits.argmax(axis=1))
            metrics.update({f"head_{key}": head[key] for key in ("acc", "nmi", "ari", "n_clusters_used")})
    elif logits is not None:
        metrics["head_n_clusters_used"] = int(len(np.unique(logits.argmax(axis=1))))

    buf = io.StringIO()
    writer = csv.writer(buf)
    class_names = getattr(store, "class_names", None)
    has_labels = labels is not None
    writer.writerow(["path", "cluster"] + (["label"] if has_labels else []))
    for i, (path, cluster) in enumerate(zip(store.paths, pred)):
        row = [path, int(cluster)]
        if has_labels:
            y = int(labels[i])
            row.append("" if y < 0 else (class_names[y] if class_names and y < len(class_names) else y))
        writer.writerow(row)
    atomic_write_bytes(out_dir / "assignments.csv", buf.getvalue().encode())
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    return metrics


def format_summary(metrics: dict[str, Any]) -> str:
    keys = ["acc", "nmi", "ari", "knn_acc", "head_acc", "head_nmi"]
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))
    sizes = metrics["cluster_sizes"]
    return (f"{metrics['n_images']} images -> {sum(1 for s in sizes if s)} clusters "
            f"(sizes {min(sizes)}..{max(sizes)})" + (f"; {shown}" if shown else ""))
