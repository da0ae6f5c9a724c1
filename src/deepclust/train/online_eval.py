"""Per-epoch evaluation inside the loop: collapse statistics and online k-NN accuracy.

Runs on rank 0 only, on a fixed seeded subsample of the store so that epochs are
comparable. k-NN (when labels are known): the subsample is split 80/20 (seeded) into a
labelled bank and queries — or, with a separate labelled eval store, the store's
subsample is the bank and the eval store the queries. Labels are never used for training.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch

from deepclust.methods.base import Method
from deepclust.models.encoder import embed_images, embed_with_head
from deepclust.train.monitor import CollapseStats, collapse_stats

log = logging.getLogger("deepclust.train")


def _knn_fn():
    try:
        from deepclust.evaluate.knn import knn_accuracy
    except ImportError:
        return None
    return knn_accuracy


class OnlineEvaluator:
    def __init__(self, images: np.ndarray, labels: np.ndarray | None, *, k: int, seed: int,
                 monitor_samples: int, eval_samples: int, knn_every: int, knn_k: int,
                 device: torch.device, batch_size: int, amp_dtype: torch.dtype | None,
                 eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None):
        self.images, self.k, self.seed = images, k, seed
        self.device, self.batch_size, self.amp_dtype = device, batch_size, amp_dtype
        self.knn_k = knn_k
        rng = np.random.default_rng([seed, 7919])
        labelled = labels is not None and (labels >= 0).sum() > 1
        self.knn_every = knn_every if (labelled or eval_labels is not None) else 0
        self.knn = _knn_fn() if self.knn_every else None
        if self.knn_every and self.knn is None:
            warnings.warn("deepclust.evaluate.knn is not available: online k-NN accuracy is skipped")
            self.knn_every = 0
        n_sample = min(len(images), max(monitor_samples, eval_samples if self.knn_every else 0))
        self.sample = np.sort(rng.choice(len(images), n_sample, replace=False))
        self.n_monitor = min(monitor_samples, n_sample)
        self.eval_images = eval_images
        if self.knn_every:
            if eval_images is not None and eval_labels is not None and labelled:
                keep = labels[self.sample] >= 0
                self.bank_idx, self.bank_y = self.sample[keep], labels[self.sample][keep]
                q = np.flatnonzero(eval_labels >= 0)
                self.query_idx = np.sort(rng.choice(q, min(len(q), eval_samples), replace=False))
                self.query_y = eval_labels[self.query_idx]
            else:
                src_images, src_labels = (images, labels) if labelled else (eval_images, eval_labels)
                self.eval_images = src_images
                keep = np.flatnonzero(src_labels >= 0)
                keep = rng.permutation(keep)[: min(len(keep), eval_samples)]
                cut = int(round(0.8 * len(keep)))
                self.bank_idx, self.query_idx = np.sort(keep[:cut]), np.sort(keep[cut:])
                self.bank_y, self.query_y = src_labels[self.bank_idx], src_labels[self.query_idx]
                # bank features come from `src_images`: when that is the eval store, embed from it
                self._bank_from_eval = src_images is not images

    def __call__(self, method: Method, epoch: int) -> tuple[CollapseStats, dict[str, Any]]:
        emb, logits = embed_with_head(method.encoder(), self.images, device=self.device, batch_size=self.batch_size,
                                      indices=self.sample[: self.n_monitor], head=method.cluster_head(),
                                      amp_dtype=self.amp_dtype)
        stats = collapse_stats(emb, logits, k=self.k, seed=self.seed + epoch)
        row: dict[str, Any] = stats.as_log()
        if self.knn_every and (epoch + 1) % self.knn_every == 0:
            row["knn_acc"] = self.knn_accuracy(method)
        return stats, row

    def knn_accuracy(self, method: Method) -> float:
        bank_images = self.eval_images if getattr(self, "_bank_from_eval", False) else self.images
        common = dict(device=self.device, batch_size=self.batch_size, amp_dtype=self.amp_dtype)
        encoder = method.encoder()
        bank = embed_images(encoder, bank_images, indices=self.bank_idx, **common)
        queries = embed_images(encoder, self.eval_images, indices=self.query_idx, **common)
        return float(self.knn(bank, self.bank_y, queries, self.query_y, k=min(self.knn_k, len(bank)), T=0.07))
