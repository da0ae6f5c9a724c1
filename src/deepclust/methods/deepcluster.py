"""DeepCluster (Caron, Bojanowski, Joulin, Douze, ECCV 2018, arXiv:1807.05520).

Alternate, once per epoch:

1. embed every image with the current encoder (``ctx.embed_all()``), PCA-whiten the
   features to ``pca_dim`` dimensions and L2-normalise them (the paper's pre-processing),
2. cluster them with k-means (faiss; ``n_clusters`` may exceed the number of classes:
   over-segmentation helps, the paper uses 10k clusters for 1k ImageNet classes); empty
   clusters are repaired by ``deepclust.cluster.kmeans``, except that identical points are
   never split over clusters (such clusters stay empty and the sampler skips them),
3. re-initialise the linear classifier -- and its optimiser state, as the reference code
   builds a new optimiser for the top layer every epoch -- and train backbone + classifier to predict the
   cluster index (pseudo-label) of each image, sampling images uniformly over clusters
   (``sampling="uniform"``, the paper's choice) or weighting the loss by inverse cluster
   size (``sampling="weighted"``).

Optionally the input is a Sobel-filtered grey image (``sobel=True``; the backbone must then
take 2 channels), which keeps k-means from grouping by colour.

Logged per epoch: ``nmi_vs_prev`` (NMI between consecutive assignments, the paper's
stability curve), ``nmi_vs_labels`` (when labels are known; evaluation only),
``kmeans_seconds`` (to measure k-means' share of the epoch) and ``n_empty_repaired``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from sklearn.metrics import normalized_mutual_info_score

from deepclust.cluster import kmeans, pca_whiten
from deepclust.losses.deepcluster import DeepClusterLoss, inverse_size_weights
from deepclust.methods.base import Method, StepOutput, StepState
from deepclust.methods.common import MethodConfigError, as_encoder, build_views, check_backbone, patch_size_of
from deepclust.methods.config import TypedConfig
from deepclust.methods.state import TrainContext
from deepclust.models.heads import ClassifierHead

SAMPLINGS = ("uniform", "weighted", "shuffle")


def uniform_cluster_indices(labels: np.ndarray, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """DeepCluster's ``UnifLabelSampler``: ``int(n / n_nonempty) + 1`` images from each
    non-empty cluster (with replacement when the cluster has at most that many members),
    shuffled, cut to ``n`` (or repeated from the start when shorter). Every cluster then
    appears (almost) equally often in an epoch; empty clusters are skipped."""
    labels = np.asarray(labels)
    clusters = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    per_cluster = int(n_samples / max(1, len(clusters))) + 1
    picks = [rng.choice(members, per_cluster, replace=len(members) <= per_cluster) for members in clusters]
    order = np.concatenate(picks) if picks else np.zeros(0, np.int64)
    rng.shuffle(order)
    if len(order) < n_samples:
        order = np.concatenate([order, order[: n_samples - len(order)]])
    return order[:n_samples].astype(np.int64)


@dataclass
class DeepClusterConfig(TypedConfig):
    """DeepCluster's hyper-parameters (``method_kwargs`` of a recipe).

    n_clusters: k-means clusters = classifier outputs; default (null) ``k``.
    pca_dim: PCA-whitening dimension before k-means (256 in the paper).
    sampling: "uniform" (over clusters), "weighted" (inverse-size loss weights) or "shuffle".
    kmeans_iters, kmeans_n_init: faiss k-means iterations and restarts (paper: 20, 1).
    sobel: Sobel-filtered grey input (the paper's default for ImageNet).
    augment: ``MultiCropAugment`` options over the defaults (one random-resized crop + flip).
    """

    n_clusters: int | None = None
    pca_dim: int = 256
    sampling: Literal["uniform", "weighted", "shuffle"] = "uniform"
    kmeans_iters: int = 20
    kmeans_n_init: int = 1
    sobel: bool = False
    augment: dict[str, Any] | None = None


class DeepCluster(Method):
    """Backbone + linear classifier over k-means pseudo-labels (see module doc).

    Args:
        backbone: a trunk ``(B, C, S, S) -> (B, embed_dim)`` (``C = 2`` when ``sobel``) or an `Encoder`.
        config: a `DeepClusterConfig` (defaults if None); keyword overrides are checked against it.
        k: number of clusters wanted in the end (evaluation, `cluster_head`).
        img_size: working image size (default crop size).
    """

    name = "deepcluster"
    Config = DeepClusterConfig
    class_weights: torch.Tensor

    def __init__(self, backbone: torch.nn.Module, config: DeepClusterConfig | None = None, *,
                 k: int = 10, img_size: int = 32, **overrides: Any):
        cfg: DeepClusterConfig = self.make_config(config, overrides)
        n_clusters = int(cfg.n_clusters or k)
        if n_clusters < 2:
            raise MethodConfigError(f"deepcluster: n_clusters must be >= 2, got {n_clusters}")
        defaults = dict(n_global=1, global_size=img_size, global_scale=(0.08, 1.0), n_local=0,
                        color_jitter=None, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, sobel=cfg.sobel)
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        self.config, self.views = cfg, views
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        self.k = int(k)
        self.n_clusters = n_clusters
        self.pca_dim = cfg.pca_dim
        self.sampling = cfg.sampling
        self.kmeans_iters = cfg.kmeans_iters
        self.kmeans_n_init = cfg.kmeans_n_init
        self.head = ClassifierHead(embed_dim, n_clusters)
        self.loss_fn = DeepClusterLoss()
        # Inverse-size weights for sampling="weighted" (all ones otherwise).
        self.register_buffer("class_weights", torch.ones(n_clusters), persistent=False)
        self.pseudo_labels: torch.Tensor | None = None   # (N,) int64 on the CPU
        self._labels_on_device: torch.Tensor | None = None
        self.prev_labels: np.ndarray | None = None
        self._last_n_empty_repaired = 0

    # --- per epoch ------------------------------------------------------------------
    def on_epoch_start(self, ctx: TrainContext) -> None:
        if ctx.embed_all is None:
            raise MethodConfigError("deepcluster needs ctx.embed_all (the loop provides it) to cluster the data")
        features = ctx.embed_all()
        start = time.perf_counter()
        labels = self._cluster(features, seed=ctx.seed + ctx.epoch)
        labels = self._same_on_every_process(labels, ctx.device)
        ctx.logs["kmeans_seconds"] = time.perf_counter() - start
        ctx.logs["n_empty_repaired"] = self._last_n_empty_repaired
        previous = self.pseudo_labels   # last epoch's assignment (also after a resume)
        if previous is not None and len(previous) == len(labels):
            ctx.logs["nmi_vs_prev"] = float(normalized_mutual_info_score(previous.numpy(), labels))
        if ctx.labels is not None:
            known = np.asarray(ctx.labels) >= 0
            if known.any():
                ctx.logs["nmi_vs_labels"] = float(
                    normalized_mutual_info_score(np.asarray(ctx.labels)[known], labels[known]))
        ctx.logs["clusters_used"] = int(len(np.unique(labels)))
        self.set_pseudo_labels(labels)
        self._reset_head(seed=ctx.seed * 100_003 + ctx.epoch)
        ctx.reinitialized.extend(self.head.parameters())  # the loop drops their optimiser state

    def _cluster(self, features: np.ndarray, seed: int) -> np.ndarray:
        x = pca_whiten(features, self.pca_dim)
        result = kmeans(x, self.n_clusters, n_init=self.kmeans_n_init, max_iter=self.kmeans_iters,
                        seed=seed)
        self._last_n_empty_repaired = result.n_empty_repaired
        return result.labels

    @staticmethod
    def _same_on_every_process(labels: np.ndarray, device: torch.device) -> np.ndarray:
        """k-means is not bit-reproducible across devices: everyone takes rank 0's labels."""
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return labels
        t = torch.as_tensor(labels, dtype=torch.int64, device=device)
        dist.broadcast(t, src=0)
        return t.cpu().numpy()

    def set_pseudo_labels(self, labels: np.ndarray) -> None:
        """Install ``(N,)`` pseudo-labels (k-means output, or restored from a checkpoint)."""
        labels = np.asarray(labels, dtype=np.int64)
        if labels.ndim != 1 or labels.min() < 0 or labels.max() >= self.n_clusters:
            raise MethodConfigError(f"deepcluster: pseudo-labels must be (N,) in [0, {self.n_clusters})")
        if self.pseudo_labels is not None:
            self.prev_labels = self.pseudo_labels.numpy()
        self.pseudo_labels = torch.from_numpy(labels)
        self._labels_on_device = None
        weights = inverse_size_weights(labels, self.n_clusters)
        self.class_weights.copy_(weights.to(self.class_weights.device))

    @torch.no_grad()
    def _reset_head(self, seed: int) -> None:
        """New clusters = new classes: re-draw the classifier (N(0, 0.01^2), zero bias).
        Seeded explicitly so that every DDP process draws the same weights."""
        g = torch.Generator().manual_seed(int(seed))
        w = self.head.linear.weight
        w.copy_((torch.randn(w.shape, generator=g) * 0.01).to(w.device, w.dtype))
        self.head.linear.bias.zero_()

    def epoch_indices(self, ctx: TrainContext) -> np.ndarray | None:
        if self.sampling != "uniform" or self.pseudo_labels is None:
            return None
        rng = np.random.default_rng([ctx.seed, ctx.epoch])
        return uniform_cluster_indices(self.pseudo_labels.numpy(), len(self.pseudo_labels), rng)

    # --- per step -------------------------------------------------------------------
    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """``{"crops": [one augmented view], "targets": pseudo-labels (B,), "index"}``."""
        if self.pseudo_labels is None:
            raise MethodConfigError("deepcluster: no pseudo-labels yet; on_epoch_start must run k-means first")
        images = batch["images"]
        if self._labels_on_device is None or self._labels_on_device.device != images.device:
            self._labels_on_device = self.pseudo_labels.to(images.device)
        targets = self._labels_on_device[batch["index"].to(images.device).long()]
        return {"crops": self.views(images), "targets": targets, "index": batch["index"]}

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        targets = batch["targets"]
        logits = self.head(self.backbone(batch["crops"][0]))
        weights = self.class_weights if self.sampling == "weighted" else None
        loss = self.loss_fn(logits, targets, weights)
        agree = (logits.detach().argmax(dim=1) == targets).float().mean()
        return StepOutput(terms={"deepcluster": loss}, logs={"pseudo_label_acc": agree})

    # --- inference ------------------------------------------------------------------
    def cluster_head(self) -> torch.nn.Module | None:
        """The classifier when it has ``k`` outputs, else None. The classifier is
        re-initialised every epoch, so its scores refer to the *last epoch's* k-means
        clusters (the ones it was trained on)."""
        return self.head if self.n_clusters == self.k else None

    # --- checkpoints ----------------------------------------------------------------
    def state_extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.pseudo_labels is not None:
            extra["pseudo_labels"] = self.pseudo_labels.clone()
        if self.prev_labels is not None:
            extra["prev_labels"] = torch.from_numpy(np.asarray(self.prev_labels, dtype=np.int64))
        return extra

    def load_state_extra(self, state: dict[str, Any]) -> None:
        if "prev_labels" in state:
            self.prev_labels = np.asarray(state["prev_labels"], dtype=np.int64)
        if "pseudo_labels" in state:
            prev = self.prev_labels
            self.pseudo_labels = None
            self.set_pseudo_labels(np.asarray(state["pseudo_labels"]))
            self.prev_labels = prev


__all__ = ["DeepCluster", "DeepClusterConfig", "pca_whiten", "uniform_cluster_indices"]
