"""Image-text contrastive losses: CLIP, ALIGN and UniCL, over the global batch.

All three score every image of the batch against every text by the cosine similarity of
their embeddings, scaled, and minimise a symmetric cross-entropy (image -> text rows and
text -> image columns, averaged). They differ in the scale and in the targets:

* **CLIP** (Radford et al., 2021, arXiv:2103.00020, Fig. 3 pseudo-code)::

      logits = exp(logit_scale) * norm(I) @ norm(T).T          (N, N)
      loss   = (CE(logits, arange(N)) + CE(logits.T, arange(N))) / 2

  ``logit_scale`` is learnable, initialised to ln(1/0.07) and clamped to at most ln(100)
  (the method clamps it after each step).
* **ALIGN** (Jia et al., 2021, arXiv:2102.05918, sec. 4)::

      logits = norm(I) @ norm(T).T / temperature               (N, N)
      loss   = (CE_ls(logits, arange(N)) + CE_ls(logits.T, arange(N))) / 2

  with a learnable ``temperature`` initialised to 1.0 and label smoothing 0.1
  (``CE_ls``: the target is ``(1 - eps) * onehot + eps / N``, Keras' and torch's definition).
* **UniCL** (Florence; Yang et al., 2022, arXiv:2204.03610, eq. 2-3): targets from labels;
  every pair whose image and text share a label is a positive::

      P[i, j] = [y_i == y_j] / sum_j' [y_i == y_j']             (rows sum to one)
      loss    = (SCE(logits, P) + SCE(logits.T, P.T)) / 2,  SCE(z, P) = -mean_i sum_j P_ij log softmax(z_i)_j

  With a distinct label per pair (caption data) ``P`` is the identity and UniCL is CLIP.

Shapes: ``image (B, D)``, ``text (B, D)`` (this process' rows, not yet normalised; row i of
both is pair i), ``labels (B,)`` int64, scalars as 0-d tensors. Under DDP the rows of every
process are gathered **with their gradient** (`deepclust.core.distributed.all_gather_with_grad`)
so the similarity matrix spans the global batch ``N = B x world``; each process computes the
whole ``(N, N)`` loss, as open_clip does with ``gather_with_grad`` and ``local_loss=False``,
and DDP's gradient averaging then gives exactly the gradient of one process on the
concatenated batch (tested in ``tests/losses/test_contrastive.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from deepclust.core.distributed import all_gather_cat, all_gather_with_grad

__all__ = ["align_loss", "clip_loss", "gather_pairs", "similarity", "soft_target_cross_entropy", "unicl_loss",
           "unicl_targets"]


def gather_pairs(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Every process' rows in rank order: features with their gradient, labels without."""
    if image.shape != text.shape or image.ndim != 2:
        raise ValueError(f"image and text features must both be (B, D), got {tuple(image.shape)} "
                         f"and {tuple(text.shape)}")
    gathered = None if labels is None else all_gather_cat(labels)
    return all_gather_with_grad(image), all_gather_with_grad(text), gathered


def similarity(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """Cosine similarities ``(N, N)``: row i is image i against every text (float32)."""
    return F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).t()


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``-mean_i sum_j targets_ij log softmax(logits_i)_j`` (rows of ``targets`` sum to one)."""
    return -(targets * logits.log_softmax(dim=-1)).sum(dim=-1).mean()


def clip_loss(image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE with scale ``exp(logit_scale)`` (see module doc)."""
    image, text, _ = gather_pairs(image, text)
    logits = logit_scale.float().exp() * similarity(image, text)
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def align_loss(image: torch.Tensor, text: torch.Tensor, temperature: torch.Tensor,
               label_smoothing: float = 0.1) -> torch.Tensor:
    """ALIGN's symmetric cross-entropy of ``cos / temperature`` with label smoothing."""
    image, text, _ = gather_pairs(image, text)
    logits = similarity(image, text) / temperature.float()
    target = torch.arange(len(logits), device=logits.device)
    return (F.cross_entropy(logits, target, label_smoothing=label_smoothing)
            + F.cross_entropy(logits.t(), target, label_smoothing=label_smoothing)) / 2


def unicl_targets(labels: torch.Tensor) -> torch.Tensor:
    """``P (N, N)``: 1 where labels agree, each row normalised to sum to one."""
    same = (labels.view(-1, 1) == labels.view(1, -1)).float()
    return same / same.sum(dim=1, keepdim=True)


def unicl_loss(image: torch.Tensor, text: torch.Tensor, labels: torch.Tensor,
               logit_scale: torch.Tensor) -> torch.Tensor:
    """UniCL's bidirectional soft-target loss with label-derived targets (see module doc)."""
    if labels.shape != (image.shape[0],):
        raise ValueError(f"labels must be ({image.shape[0]},), got {tuple(labels.shape)}")
    image, text, all_labels = gather_pairs(image, text, labels)
    assert all_labels is not None
    logits = logit_scale.float().exp() * similarity(image, text)
    targets = unicl_targets(all_labels)
    return (soft_target_cross_entropy(logits, targets) + soft_target_cross_entropy(logits.t(), targets.t())) / 2
