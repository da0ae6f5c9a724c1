"""Per-epoch evaluation inside the loop: collapse statistics and online k-NN accuracy.

Runs on rank 0 only, on a fixed seeded subsample of the store so that epochs are
comparable. k-NN (when labels are known): the subsample is split 80/20 (seeded) into a
labelled bank and queries — or, with a separate labelled eval store, the store's
subsample is the bank and the eval store the queries. Labels are never used for training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from deepclust.evaluate.knn import knn_accuracy
from deepclust.methods.base import Method
from deepclust.models.encoder import embed_images, embed_with_head
from deepclust.train.monitor import CollapseStats, collapse_stats

log = logging.getLogger("deepclust.train")


@dataclass
class KnnSplit:
    """Labelled bank and queries (indices into their own image arrays)."""

    bank_images: np.ndarray
    bank_idx: np.ndarray
    bank_y: np.ndarray
    query_images: np.ndarray
    query_idx: np.ndarray
    query_y: np.ndarray


def knn_split(images: np.ndarray, labels: np.ndarray | None, eval_images: np.ndarray | None,
              eval_labels: np.ndarray | None, sample: np.ndarray, eval_samples: int,
              rng: np.random.Generator) -> KnnSplit | None:
    """The store's labelled subsample as the bank and the eval store as queries; or, with
    labels on one side only, a seeded 80/20 split of that side; None without labels."""
    labelled = labels is not None and int((labels >= 0).sum()) > 1
    if labelled and eval_images is not None and eval_labels is not None:
        assert labels is not None
        keep = labels[sample] >= 0
        q = np.flatnonzero(eval_labels >= 0)
        query_idx = np.sort(rng.choice(q, min(len(q), eval_samples), replace=False))
        return KnnSplit(images, sample[keep], labels[sample][keep], eval_images, query_idx, eval_labels[query_idx])
    if labelled:
        src_images, src_labels = images, labels
    elif eval_images is not None and eval_labels is not None:
        src_images, src_labels = eval_images, eval_labels
    else:
        return None
    assert src_labels is not None
    keep = rng.permutation(np.flatnonzero(src_labels >= 0))[:eval_samples]
    cut = int(round(0.8 * len(keep)))
    bank_idx, query_idx = np.sort(keep[:cut]), np.sort(keep[cut:])
    return KnnSplit(src_images, bank_idx, src_labels[bank_idx], src_images, query_idx, src_labels[query_idx])


class OnlineEvaluator:
    def __init__(self, images: np.ndarray, labels: np.ndarray | None, *, k: int, seed: int,
                 monitor_samples: int, eval_samples: int, knn_every: int, knn_k: int,
                 device: torch.device, batch_size: int, amp_dtype: torch.dtype | None,
                 eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None):
        self.images, self.k, self.seed = images, k, seed
        self.device, self.batch_size, self.amp_dtype = device, batch_size, amp_dtype
        self.knn_k = knn_k
        rng = np.random.default_rng([seed, 7919])
        labelled = labels is not None and int((labels >= 0).sum()) > 1
        self.knn_every = knn_every if (labelled or eval_labels is not None) else 0
        n_sample = min(len(images), max(monitor_samples, eval_samples if self.knn_every else 0))
        self.sample = np.sort(rng.choice(len(images), n_sample, replace=False))
        self.n_monitor = min(monitor_samples, n_sample)
        self.split = (knn_split(images, labels, eval_images, eval_labels, self.sample, eval_samples, rng)
                      if self.knn_every else None)

    def __call__(self, method: Method, epoch: int) -> tuple[CollapseStats, dict[str, Any]]:
        emb, logits = embed_with_head(method.encoder(), self.images, device=self.device, batch_size=self.batch_size,
                                      indices=self.sample[: self.n_monitor], head=method.cluster_head(),
                                      amp_dtype=self.amp_dtype)
        stats = collapse_stats(emb, logits, k=self.k, seed=self.seed + epoch)
        row: dict[str, Any] = stats.as_log()
        if self.split is not None and self.knn_every and (epoch + 1) % self.knn_every == 0:
            row["knn_acc"] = self.knn_accuracy(method, self.split)
        return stats, row

    def knn_accuracy(self, method: Method, split: KnnSplit) -> float:
        encoder = method.encoder()
        bank = embed_images(encoder, split.bank_images, indices=split.bank_idx, device=self.device,
                            batch_size=self.batch_size, amp_dtype=self.amp_dtype)
        queries = embed_images(encoder, split.query_images, indices=split.query_idx, device=self.device,
                               batch_size=self.batch_size, amp_dtype=self.amp_dtype)
        return float(knn_accuracy(bank, split.bank_y, queries, split.query_y, k=min(self.knn_k, len(bank)), T=0.07))
