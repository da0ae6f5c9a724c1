"""DAC: Deep Adaptive Image Clustering (Chang, Wang, Meng, Xiang, Pan, ICCV 2017).

Clustering as binary pairwise classification: a network with a k-way softmax head gives
each image an L2-normalised "label feature"; two images are "same" when the cosine of their
label features is above an upper threshold ``u``, "different" below a lower threshold ``l``,
and the rest are ignored. The network is trained with binary cross-entropy on the selected
pairs (`deepclust.losses.dac.DACLoss`), and the thresholds move towards each other every
epoch (``u`` down, ``l`` up) so that more and more pairs are used, until they meet
(`deepclust.losses.dac.dac_thresholds`):

* ``thresholds: paper`` (default): the paper's ``u = 0.95 - lam``, ``l = 0.455 + 0.1 lam``,
  ``lam`` growing by 1.1 x 0.009 per epoch (they meet at 0.5 after about 45 epochs);
* ``thresholds: code``: the authors' CIFAR-10 code, ``u`` from 0.99 and ``l`` from 0.80 in
  equal steps over 50 epochs, meeting at 0.895;
* ``threshold_epochs``: make either schedule meet at that epoch instead (short runs).

``targets: clean`` follows the authors' released code: the pair labels come from the
un-augmented images (a forward pass without gradient, in training mode) and the augmented
views are fitted to them, so an augmentation cannot make two views of different digits look
"same". ``targets: self`` (default) selects the pairs on the views' own label features.

The thresholds are a pure function of ``StepState.epoch`` (constant within an epoch, as in
the paper). Pairs are formed over the global batch: label features of every process are
gathered with `deepclust.core.distributed.all_gather_with_grad`.

Clusters are the head's argmax (`cluster_head`, reported as ``head_acc``); the trunk's
features are clustered with k-means as for every method (``acc``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from deepclust.core.distributed import all_gather_cat, all_gather_with_grad, get_rank
from deepclust.losses.dac import DACLoss, dac_thresholds
from deepclust.methods.base import Method, StepOutput, StepState
from deepclust.methods.common import MethodConfigError, as_encoder, build_views, check_backbone, patch_size_of
from deepclust.methods.config import TypedConfig


@dataclass
class DACConfig(TypedConfig):
    """DAC's hyper-parameters (``method_kwargs``).

    hidden_dim: width of the head's hidden layer (Linear-BN-ReLU) before the k-way layer; 0 for
      a linear head.
    logit_bn: BatchNorm on the k logits before the softmax (default true). Without it a fresh
      head gives near-uniform softmax outputs whose label features all have cosine ~1, so every
      pair is "same" and the network collapses to one cluster at once.
    thresholds: "paper" (default) or "code" (see module doc); threshold_epochs: epoch at which
      the thresholds meet (None: the schedule's own speed).
    augment: ``MultiCropAugment`` options; one view per image by default (the paper trains on
      the images themselves), more global views add pairs between views of one image too.
    targets: "self" (default: pairs selected on the views' own label features) or "clean"
      (selected on the un-augmented images, the authors' code; see module doc).
    """

    hidden_dim: int = 512
    logit_bn: bool = True
    thresholds: Literal["paper", "code"] = "paper"
    threshold_epochs: float | None = None
    augment: dict[str, Any] | None = None
    targets: Literal["self", "clean"] = "self"


class DAC(Method):
    """Adaptive pairwise classification with a k-way softmax head (see module doc)."""

    name = "dac"
    Config = DACConfig

    def __init__(self, backbone: nn.Module, config: DACConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: DACConfig = self.make_config(config, overrides)
        defaults = dict(n_global=1, global_size=img_size, global_scale=(0.6, 1.0), n_local=0)
        views = build_views(defaults, cfg.augment, patch_size_of(backbone))
        super().__init__(as_encoder(backbone, views, self.name))
        if views.n_local:
            raise MethodConfigError("dac uses global views only (set n_local: 0)")
        if cfg.hidden_dim < 0 or (cfg.threshold_epochs is not None and cfg.threshold_epochs <= 0):
            raise MethodConfigError(f"dac: hidden_dim must be >= 0 and threshold_epochs > 0, got "
                                    f"{cfg.hidden_dim}, {cfg.threshold_epochs}")
        if k < 2:
            raise MethodConfigError(f"dac needs k >= 2 clusters, got {k}")
        self.config, self.views, self.k = cfg, views, int(k)
        embed_dim = check_backbone(backbone, in_chans=2 if views.sobel is not None else 3, method=self.name)
        layers: list[nn.Module] = []
        if cfg.hidden_dim:
            layers += [nn.Linear(embed_dim, cfg.hidden_dim), nn.BatchNorm1d(cfg.hidden_dim), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(cfg.hidden_dim or embed_dim, k))
        if cfg.logit_bn:
            layers.append(nn.BatchNorm1d(k))
        self.head = nn.Sequential(*layers)
        self.loss_fn = DACLoss()

    def thresholds(self, epoch: int) -> tuple[float, float]:
        """``(u, l)`` for a 0-based epoch."""
        return dac_thresholds(epoch, self.config.thresholds, self.config.threshold_epochs)

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        out = {"crops": self.views(batch["images"]), "index": batch["index"]}
        if self.config.targets == "clean":
            out["clean"] = self.encoder().preprocess(batch["images"])
        return out

    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        crops = batch["crops"]
        logits = self.head(self.backbone(torch.cat(crops)))
        everyone = all_gather_with_grad(logits)
        select = select_all = None
        if "clean" in batch:
            with torch.no_grad():
                select = self.head(self.backbone(batch["clean"])).repeat(len(crops), 1)
            select_all = all_gather_cat(select)
        upper, lower = self.thresholds(state.epoch)
        loss, fractions = self.loss_fn(logits, upper=upper, lower=lower, all_logits=everyone,
                                       offset=get_rank() * logits.shape[0],
                                       select_logits=select, all_select_logits=select_all)
        used = logits.detach().argmax(dim=1).unique().numel()
        return StepOutput(terms={"dac": loss},
                          logs={"upper": upper, "lower": lower, **fractions, "clusters_used": float(used)})

    def cluster_head(self) -> nn.Module | None:
        """The k-way head: its argmax is DAC's clustering."""
        return self.head


__all__ = ["DAC", "DACConfig"]
