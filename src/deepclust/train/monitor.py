"""Collapse watch: cheap statistics, each epoch, that show a run falling into one cluster.

* `emb_std`: mean over dimensions of the per-dimension std of L2-normalised embeddings
  (SimSiam's diagnostic). Spread-out D-dim embeddings give about 1/sqrt(D); a collapsed
  representation gives ~0. We report it and judge it relative to 1/sqrt(D).
* `n_clusters_used` and `entropy`: from the method's own k-way head (argmax per image;
  entropy of the mean softmax assignment, in nats, max log k) when it has one, else from
  k-means (k = cfg.k) on the subsample (entropy of the cluster-size histogram).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from deepclust.errors import CollapseError

# relative std (emb_std * sqrt(D)) below which the representation is called collapsed,
# and below which we warn: a healthy run stays near 1 (0.3+ in practice).
COLLAPSED_REL_STD = 1e-3
WARN_REL_STD = 0.05


@dataclass
class CollapseStats:
    emb_std: float
    rel_std: float          # emb_std * sqrt(D): ~1 when spread, ~0 when collapsed
    n_clusters_used: int
    entropy: float          # nats
    source: str             # "head" or "kmeans"
    n_outputs: int = 0      # clusters the source could use (head outputs, or k)

    def as_log(self) -> dict[str, float]:
        return {"emb_std": self.emb_std, "n_clusters_used": self.n_clusters_used, "entropy": self.entropy}


def embedding_std(emb: np.ndarray) -> tuple[float, float]:
    """(mean per-dimension std of L2-normalised rows, the same times sqrt(D))."""
    emb = np.asarray(emb, dtype=np.float64)
    normed = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    std = float(normed.std(axis=0).mean())
    return std, std * math.sqrt(emb.shape[1])


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _kmeans_labels(emb: np.ndarray, k: int, seed: int) -> np.ndarray:
    try:
        from deepclust.cluster.kmeans import kmeans
    except ImportError:  # clustering package not installed in this checkout: scikit-learn
        from sklearn.cluster import KMeans

        return KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(emb)
    return kmeans(emb.astype(np.float32), k, n_init=3, seed=seed).labels


def collapse_stats(emb: np.ndarray, logits: np.ndarray | None = None, *, k: int = 10, seed: int = 0) -> CollapseStats:
    """Statistics of one epoch's embeddings (N,D) and, if the method has a k-way head, its logits (N,k)."""
    std, rel = embedding_std(emb)
    if logits is not None:
        n_outputs = int(np.asarray(logits).shape[1])
        labels = np.asarray(logits).argmax(axis=1)
        entropy = _entropy(_softmax(np.asarray(logits, dtype=np.float64)).mean(axis=0))
        source = "head"
    else:
        n_clusters = n_outputs = min(k, len(emb))
        if rel < COLLAPSED_REL_STD:
            labels = np.zeros(len(emb), dtype=np.int64)  # identical points: one cluster, no k-means needed
        else:
            labels = _kmeans_labels(emb, n_clusters, seed)
        counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
        entropy = _entropy(counts / counts.sum())
        source = "kmeans"
    return CollapseStats(std, rel, int(len(np.unique(labels))), entropy, source, n_outputs)


def check_collapse(stats: CollapseStats, *, epoch: int, k: int, raise_error: bool = True) -> None:
    """Warn when the run drifts towards collapse; raise CollapseError when it has collapsed
    (every image in one cluster, or embeddings that no longer vary)."""
    # One cluster by argmax *and* a mean assignment concentrated on it (entropy under 5% of
    # its maximum): a head that is merely untrained (DeepCluster re-initialises its
    # classifier every epoch) has near-uniform soft assignments and is not called collapsed.
    max_entropy = math.log(max(2, stats.n_outputs or k))
    collapsed_clusters = k > 1 and stats.n_clusters_used <= 1 and stats.entropy < 0.05 * max_entropy
    collapsed_std = stats.rel_std < COLLAPSED_REL_STD
    if collapsed_clusters or collapsed_std:
        what = (
            f"the embeddings stopped varying (std {stats.emb_std:.2e}, {stats.rel_std:.1e} of a spread-out run)"
            if collapsed_std
            else f"all images fall into one cluster of the {stats.source}"
        )
        message = (
            f"training collapsed at epoch {epoch + 1}: {what}. The last checkpoint was saved. "
            "Try a lower learning rate (--lr), a longer warm-up, stronger centering/sharpening "
            "(DINO: smaller teacher_temp, center_momentum) or more Sinkhorn iterations (SwAV), "
            "or set collapse_check: false to keep going anyway."
        )
        if raise_error:
            raise CollapseError(message)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        return
    if stats.rel_std < WARN_REL_STD or (k > 1 and stats.n_clusters_used <= max(1, k // 4)):
        warnings.warn(
            f"epoch {epoch + 1}: the run may be collapsing: {stats.n_clusters_used} of {k} clusters used, "
            f"embedding std {stats.emb_std:.3e} ({stats.rel_std:.2f} of a spread-out run), entropy {stats.entropy:.3f}",
            RuntimeWarning,
            stacklevel=2,
        )
