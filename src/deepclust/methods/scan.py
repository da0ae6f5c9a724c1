"""SCAN, the whole-network stage (Van Gansbeke et al., "SCAN: Learning to Classify Images
without Labels", ECCV 2020): train the encoder *and* a k-way head on augmented views of each
image and of one of its mined nearest neighbours.

1. ``on_train_start``: mine every image's ``n_neighbours`` nearest neighbours once, in the
   space named by ``neighbours_from``: ``pixels`` (the store's pixels, PCA-reduced to at most
   128 dimensions when larger) or ``encoder`` (the backbone's own L2-normalised embeddings:
   the SCAN paper's setting, meaningful when the backbone starts from a trained model, e.g.
   ``--init``). The neighbour table is saved with the checkpoint (a resumed run uses the same).
2. Each step: one augmented view of each anchor and of one random mined neighbour, through
   the backbone and ``n_heads`` heads at once (`deepclust.heads.module.MultiHead`); each head
   minimises `deepclust.heads.losses.scan_loss` (consistency + ``entropy_weight`` x negative
   entropy of the batch-mean prediction). A running mean of each head's loss picks the head
   that is kept (SCAN keeps the lowest-loss head).
3. The last ``self_label_epochs`` epochs: SCAN's self-labelling on the kept head: samples
   whose prediction on the evaluation view exceeds ``threshold`` become targets of a
   class-balanced cross-entropy on the augmented view (`deepclust.heads.losses.self_label_loss`).

Clusters are the kept head's argmax (`cluster_head`, reported as ``head_acc``); the backbone's
features are also clustered with k-means as for every method (``acc``). The cheaper stage on
cached embeddings (heads only, no backbone) is `deepclust.heads.train_heads`
(``deepclust cluster --head scan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from deepclust.heads.losses import scan_loss, self_label_loss
from deepclust.heads.module import MultiHead
from deepclust.heads.neighbours import mine_neighbours
from deepclust.methods.base import Method, StepOutput, StepState, TrainContext
from deepclust.methods.common import MethodConfigError, as_encoder, build_views, check_backbone, patch_size_of
from deepclust.methods.config import TypedConfig

#: Pixel vectors longer than this are PCA-reduced before neighbour mining.
PIXEL_DIM = 128


@dataclass
class SCANConfig(TypedConfig):
    """SCAN's hyper-parameters (``method_kwargs``).

    n_neighbours: mined neighbours per image (SCAN: 20). neighbours_from: ``pixels`` or
      ``encoder`` (see module doc). n_heads: heads trained at once, the lowest running loss is
      kept (SCAN: 10 on CIFAR). entropy_weight: ``w`` of the entropy term (SCAN's published
      configs: 5.0). hidden_dim: 0 for SCAN's linear heads, else an MLP head.
    self_label_epochs: final epochs of self-labelling (0: none); threshold: confidence of a
      pseudo-label (SCAN: 0.99); class_balance: inverse-frequency weights (SCAN: on).
    loss_momentum: momentum of the running mean of each head's loss.
    augment: ``MultiCropAugment`` options of the views (one global view per image).
    """

    n_neighbours: int = 20
    neighbours_from: Literal["pixels", "encoder"] = "pixels"
    n_heads: int = 10
    entropy_weight: float = 5.0
    hidden_dim: int = 0
    self_label_epochs: int = 0
    threshold: float = 0.99
    class_balance: bool = True
    loss_momentum: float = 0.99
    augment: dict[str, Any] | None = None


def pixel_vectors(images: np.ndarray, max_dim: int = PIXEL_DIM, seed: int = 0) -> np.ndarray:
    """``uint8 (N, S, S, C)`` -> ``(N, D)`` float32 pixel vectors, centred and projected on their
    top ``max_dim`` principal directions when ``S*S*C > max_dim`` (exact for small images)."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
    if x.shape[1] <= max_dim:
        return x
    t = torch.from_numpy(x)
    torch.manual_seed(seed)
    centred = t - t.mean(dim=0, keepdim=True)
    _, _, v = torch.pca_lowrank(centred, q=min(max_dim, *centred.shape), center=False)
    return (centred @ v).numpy()


class _KeptHead(nn.Module):
    """One head of a `MultiHead`: ``(B, D) -> (B, K)`` logits (what ``cluster_head`` returns)."""

    def __init__(self, heads: MultiHead, index: int):
        super().__init__()
        self.heads, self.index = heads, int(index)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.heads(x)[self.index]
        return out


class SCAN(Method):
    """Whole-network SCAN with optional self-labelling (see module doc)."""

    name = "scan"
    Config = SCANConfig
    head_loss: Tensor    # (n_heads,) running mean of each head's SCAN loss (a buffer: checkpointed)
    loss_steps: Tensor   # () steps averaged into head_loss

    def __init__(self, backbone: nn.Module, config: SCANConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: SCANConfig = self.make_config(config, overrides)
        defaults = dict(n_global=1, global_size=img_size, global_scale=(0.6, 1.0), n_local=0)
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        if views.n_global != 1 or views.n_local:
            raise MethodConfigError("scan uses one global view per image (n_global: 1, n_local: 0)")
        if k < 2 or cfg.n_neighbours < 1 or cfg.n_heads < 1 or cfg.hidden_dim < 0 or cfg.self_label_epochs < 0:
            raise MethodConfigError(f"scan needs k >= 2, n_neighbours >= 1, n_heads >= 1, hidden_dim >= 0 and "
                                    f"self_label_epochs >= 0; got k={k}, {cfg}")
        if not 0.0 < cfg.threshold < 1.0 or not 0.0 <= cfg.loss_momentum < 1.0 or cfg.entropy_weight < 0:
            raise MethodConfigError("scan: threshold must be in (0, 1), loss_momentum in [0, 1), entropy_weight >= 0")
        self.config, self.views, self.k = cfg, views, int(k)
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        self.heads = MultiHead(embed_dim, self.k, cfg.n_heads, hidden_dim=cfg.hidden_dim)
        self.register_buffer("head_loss", torch.zeros(cfg.n_heads))
        self.register_buffer("loss_steps", torch.zeros((), dtype=torch.long))
        self.neighbours: np.ndarray | None = None   # (N, n_neighbours), mined in on_train_start
        self._images: np.ndarray | None = None

    # --- neighbours -----------------------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        self._images = ctx.images
        if self.neighbours is not None and len(self.neighbours) == len(ctx.images):
            return  # resumed: the checkpoint's table
        if self.config.neighbours_from == "encoder":
            if ctx.embed_all is None:
                raise MethodConfigError("scan: neighbours_from 'encoder' needs the loop's embed_all")
            space = ctx.embed_all()
        else:
            space = pixel_vectors(ctx.images, seed=ctx.seed)
        self.neighbours = mine_neighbours(space, self.config.n_neighbours)
        if ctx.labels is not None:
            from deepclust.heads.neighbours import neighbour_purity

            ctx.logs["neighbour_purity"] = neighbour_purity(self.neighbours, ctx.labels)

    def _neighbour_images(self, index: Tensor, step: int) -> Tensor:
        if self.neighbours is None or self._images is None:
            raise RuntimeError("scan: on_train_start has not mined the neighbours")
        gen = torch.Generator().manual_seed(int(step) * 7919 + 17)  # same pick on resume
        idx = index.cpu().numpy()
        col = torch.randint(self.neighbours.shape[1], (len(idx),), generator=gen).numpy()
        chosen = self.neighbours[idx, col]
        return torch.from_numpy(np.ascontiguousarray(self._images[chosen])).to(index.device)

    # --- steps ------------------------------------------------------------------------
    def self_labelling(self, state: StepState) -> bool:
        return state.epoch >= state.total_epochs - self.config.self_label_epochs

    def collate(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Any]:
        images = batch["images"]
        if self.self_labelling(state):
            return {"strong": self.views(images)[0], "weak": self.encoder().preprocess(images)}
        neighbours = self._neighbour_images(batch["index"], state.step)
        return {"anchor": self.views(images)[0], "neighbour": self.views(neighbours)[0]}

    def kept_head(self) -> int:
        return int(torch.argmin(self.head_loss)) if int(self.loss_steps) else 0

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        if "strong" in batch:
            best = self.kept_head()
            with torch.no_grad():
                weak = self.heads(self.backbone(batch["weak"]))[best]
            strong = self.heads(self.backbone(batch["strong"]))[best]
            loss, confident = self_label_loss(strong, weak, self.config.threshold, self.config.class_balance)
            return StepOutput(terms={"self_label": loss}, logs={"confident": float(confident.float().mean())})
        b = batch["anchor"].shape[0]
        logits = self.heads(self.backbone(torch.cat([batch["anchor"], batch["neighbour"]])))
        total, consistency, entropy = scan_loss(logits[:, :b], logits[:, b:], self.config.entropy_weight)
        with torch.no_grad():
            m = self.config.loss_momentum if int(self.loss_steps) else 0.0
            self.head_loss.mul_(m).add_(total.detach().float(), alpha=1 - m)
            self.loss_steps.add_(1)
        logs: dict[str, Tensor | float] = {"consistency": float(consistency.detach().mean()),
                                           "entropy": float(entropy.detach().mean()),
                                           "kept_head": float(self.kept_head())}
        return StepOutput(terms={"scan": total.sum()}, logs=logs)

    def cluster_head(self) -> nn.Module | None:
        """The kept head (lowest running SCAN loss): its argmax is the clustering."""
        return _KeptHead(self.heads, self.kept_head())

    # --- checkpoint state -------------------------------------------------------------
    def state_extra(self) -> dict[str, Any]:
        return {} if self.neighbours is None else {"neighbours": torch.from_numpy(self.neighbours)}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        table = state.get("neighbours")
        if table is not None:
            self.neighbours = np.asarray(table.cpu().numpy() if isinstance(table, Tensor) else table, dtype=np.int64)


__all__ = ["SCAN", "SCANConfig", "pixel_vectors"]
