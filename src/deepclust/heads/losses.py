"""Losses of the clustering heads: SCAN, its entropy term, self-labelling and TEMI.

Each is one small function of its inputs (no epoch, no hidden state; TEMI's cluster marginal is
passed in and updated by `update_marginal`). Shapes: ``B`` pairs in a batch, ``K`` clusters,
``H`` heads trained at once (the multi-head forms return one loss per head, ``(H,)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Probabilities are clamped to this before a log (SCAN's official ``EPS``).
EPS = 1e-8


def entropy_of_mean(probs: Tensor) -> Tensor:
    """Entropy ``H(p̄) = -Σ_k p̄_k log p̄_k`` of the batch-mean prediction ``p̄ = mean_i p_i``.

    Args:
        probs: ``(..., B, K)`` probabilities (rows sum to 1); leading dims (heads) are kept.

    Returns:
        ``(...)``: one entropy per head. Maximal (``log K``) when the batch is spread evenly.
    """
    mean = probs.mean(dim=-2).clamp_min(EPS)
    return -(mean * mean.log()).sum(dim=-1)


def scan_loss(anchor_logits: Tensor, neighbour_logits: Tensor, entropy_weight: float = 5.0
              ) -> tuple[Tensor, Tensor, Tensor]:
    """SCAN loss (Van Gansbeke et al., "SCAN: Learning to Classify Images without Labels", ECCV 2020, eq. 2).

    ``L = -1/B Σ_i log <p(a_i), p(n_i)>  +  w Σ_k p̄_k log p̄_k``, with ``p = softmax(logits)``,
    ``(a_i, n_i)`` an anchor and one of its mined neighbours, and ``p̄`` the mean of the anchors'
    predictions over the batch. The second term is ``-w H(p̄)``: it rewards spreading the
    batch over all clusters and stops the trivial one-cluster solution. Gradients flow
    through both the anchor and the neighbour (as in SCAN's code).

    Args:
        anchor_logits, neighbour_logits: ``(..., B, K)`` (a leading dim for several heads).
        entropy_weight: ``w``; SCAN's published configs use 5.0 (its code's default is 2.0).

    Returns:
        ``(total, consistency, entropy)``, each ``(...)``: ``total = consistency - w * entropy``.
    """
    anchors = F.softmax(anchor_logits, dim=-1)
    neighbours = F.softmax(neighbour_logits, dim=-1)
    similarity = (anchors * neighbours).sum(dim=-1).clamp_min(EPS)
    consistency = -similarity.log().mean(dim=-1)
    entropy = entropy_of_mean(anchors)
    return consistency - entropy_weight * entropy, consistency, entropy


def self_label_targets(weak_logits: Tensor, threshold: float = 0.99) -> tuple[Tensor, Tensor]:
    """Confident samples and their pseudo-labels (SCAN's self-labelling step, sec. 3.3).

    Args:
        weak_logits: ``(B, K)`` predictions on the weakly augmented view (no gradient needed).
        threshold: a sample is confident when its top probability is strictly above this.

    Returns:
        ``(mask, targets)``: ``(B,)`` bool and ``(B,)`` int64 argmax classes (for every row).
    """
    top, targets = F.softmax(weak_logits.detach(), dim=-1).max(dim=-1)
    return top > threshold, targets


def class_balance_weights(targets: Tensor, n_classes: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Weights inverse to the pseudo-class frequencies: ``w_c = n / n_c`` (1 for absent classes).

    Args:
        targets: ``(n,)`` int64 pseudo-labels of the confident samples.
        n_classes: ``K``.

    Returns:
        ``(K,)`` of ``dtype``. With PyTorch's weighted mean cross-entropy these weights make every
        present class count equally: ``L = 1/C Σ_c mean_{i: y_i = c} CE_i`` over the C present classes.
    """
    weights = torch.ones(n_classes, dtype=dtype, device=targets.device)
    if targets.numel():
        counts = torch.bincount(targets, minlength=n_classes).to(dtype)
        present = counts > 0
        weights[present] = targets.numel() / counts[present]
    return weights


def self_label_loss(strong_logits: Tensor, weak_logits: Tensor, threshold: float = 0.99,
                    balanced: bool = True) -> tuple[Tensor, Tensor]:
    """Class-balanced cross-entropy on the confident samples (SCAN's ``ConfidenceBasedCE``).

    Targets are the argmax of the weak view where its top probability exceeds ``threshold``;
    the loss is the cross-entropy of the strong view's logits toward them, weighted by
    `class_balance_weights` when ``balanced``.

    Args:
        strong_logits, weak_logits: ``(B, K)``.

    Returns:
        ``(loss, mask)``: a scalar (0 with a zero gradient when nothing is confident) and the
        ``(B,)`` bool mask of confident samples.
    """
    mask, targets = self_label_targets(weak_logits, threshold)
    if not bool(mask.any()):
        return strong_logits.sum() * 0.0, mask
    targets = targets[mask]
    weight = class_balance_weights(targets, strong_logits.shape[-1], strong_logits.dtype) if balanced else None
    return F.cross_entropy(strong_logits[mask], targets, weight=weight), mask


def beta_pmi(student_probs: Tensor, teacher_probs: Tensor, marginal: Tensor, beta: float = 0.6) -> Tensor:
    """TEMI's β-pointwise mutual information of two views: ``log Σ_k (q_s(k|x) q_t(k|x'))^β / q̃(k)``.

    Args:
        student_probs, teacher_probs: ``(H, B, K)``.
        marginal: ``(H, K)`` the teacher's cluster marginal ``q̃`` (an EMA of batch means).

    Returns:
        ``(H, B)``.
    """
    # The clamp only guards x**beta's infinite slope at an exact 0 (float32 softmax at 0.04 underflows).
    joint = (student_probs * teacher_probs).clamp_min(1e-30).pow(beta)
    return (joint / marginal.unsqueeze(1)).sum(dim=-1).log()


def temi_loss(student_a: Tensor, student_b: Tensor, teacher_a: Tensor, teacher_b: Tensor, marginal: Tensor, *,
              beta: float = 0.6, student_temp: float = 0.1, teacher_temp: float = 0.04) -> Tensor:
    """TEMI loss (Adaloglou et al., "Exploring the Limits of Deep Image Clustering using Pretrained
    Models", BMVC 2023, eq. 7): teacher-ensemble-weighted β-PMI between an image and a neighbour.

    For heads ``h``: ``q_s^h = softmax(s^h / τ_s)``, ``q_t^h = softmax(t^h / τ_t)`` (teacher:
    the EMA of the student, no gradient). The weight of a pair is the heads' mean teacher
    agreement ``w(a, b) = 1/H Σ_h Σ_k q_t^h(k|a) q_t^h(k|b)`` (no gradient), and per head
    ``L^h = -1/2 mean_i w_i [pmi^h(s_a, t_b) + pmi^h(s_b, t_a)]`` with `beta_pmi`.

    Args:
        student_a, student_b, teacher_a, teacher_b: ``(H, B, K)`` logits of the two views
            (a: the image, b: one of its mined neighbours).
        marginal: ``(H, K)`` ``q̃`` per head, see `update_marginal`.
        beta: β (0.6 in the paper), student_temp: τ_s (0.1), teacher_temp: τ_t (0.04).

    Returns:
        ``(H,)`` one loss per head (sum them to train all heads at once).
    """
    qs_a, qs_b = F.softmax(student_a / student_temp, -1), F.softmax(student_b / student_temp, -1)
    with torch.no_grad():
        qt_a = F.softmax(teacher_a / teacher_temp, -1)
        qt_b = F.softmax(teacher_b / teacher_temp, -1)
        weight = (qt_a * qt_b).sum(dim=-1).mean(dim=0)  # (B,)
    pmi = beta_pmi(qs_a, qt_b, marginal, beta) + beta_pmi(qs_b, qt_a, marginal, beta)
    return -(weight * pmi).mean(dim=-1) / 2


@torch.no_grad()
def update_marginal(marginal: Tensor, teacher_a: Tensor, teacher_b: Tensor, *, teacher_temp: float = 0.04,
                    momentum: float = 0.9) -> Tensor:
    """TEMI's cluster marginal: ``q̃ <- m q̃ + (1 - m) mean over both views of q_t`` per head.

    Args:
        marginal: ``(H, K)``; teacher_a, teacher_b: ``(H, B, K)`` teacher logits.

    Returns:
        the new ``(H, K)`` (the input is not modified).
    """
    probs = torch.cat([F.softmax(teacher_a / teacher_temp, -1), F.softmax(teacher_b / teacher_temp, -1)], dim=1)
    return momentum * marginal + (1 - momentum) * probs.mean(dim=1)


__all__ = ["EPS", "entropy_of_mean", "scan_loss", "self_label_targets", "class_balance_weights",
           "self_label_loss", "beta_pmi", "temi_loss", "update_marginal"]
