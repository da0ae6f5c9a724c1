"""DAC's adaptive pairwise classification loss and its threshold schedules.

Chang, Wang, Meng, Xiang, Pan, "Deep Adaptive Image Clustering", ICCV 2017, Sec. 3.

A network with a k-way softmax head gives each image a "label feature"
``f_i = softmax(z_i) / ||softmax(z_i)||_2``; the similarity of a pair is ``s_ij = <f_i, f_j>``
(a cosine in ``[0, 1]``). With an upper threshold ``u`` and a lower threshold ``l``:

    r_ij = 1 if s_ij > u ("same"),  r_ij = 0 if s_ij < l ("different"),  else not selected
    L = 1/|S| sum_{(i,j) in S} [ - r_ij log s_ij - (1 - r_ij) log(1 - s_ij) ]

over the selected ordered pairs ``S`` with ``i != j`` (the diagonal is always "same" with
zero loss, so it is left out of ``|S|``); ``s`` is clamped to ``[1e-7, 1 - 1e-7]``. The
selection is made without gradient; the gradient flows through ``s`` in the binary
cross-entropy. No selected pair gives a zero loss (with a graph).

Thresholds move every epoch until they meet (`dac_thresholds`):

* ``"paper"`` (Sec. 3.3, the default): ``u(lam) = 0.95 - lam``, ``l(lam) = 0.455 + 0.1 lam``,
  ``lam = 0`` at the first epoch, ``lam += 1.1 * 0.009`` per epoch, until ``u = l = 0.5``
  (``lam = 0.45``, about epoch 45.5);
* ``"code"`` (the authors' released CIFAR-10 code): ``u`` from 0.99 down and ``l`` from 0.80
  up in equal steps of 0.0019 per epoch, meeting at 0.895 after 50 epochs.

``meet_epochs`` compresses (or stretches) either schedule so that the thresholds meet at
that epoch, for short runs; after meeting both stay at the meeting value.

Selection on other rows (the authors' released code): the "same"/"different" labels ``r_ij``
may come from other logits of the same images, ``select_logits`` / ``all_select_logits``
(e.g. the un-augmented images, without gradient), while ``s_ij`` in the cross-entropy is
computed on ``logits`` (the augmented views). The code computes the labels on the clean
images once per chunk and fits augmented copies to them.

Shapes: ``logits (B, k)`` of the local batch; ``all_logits`` of the global batch (``(B', k)``,
the gathered rows of every process, default ``logits``); ``select_logits`` / ``all_select_logits``
the same shapes (default: ``logits`` / ``all_logits``). Returns a scalar.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

ThresholdSchedule = Literal["paper", "code"]
PAPER_STEP = 1.1 * 0.009        # lam per epoch
PAPER_MEET_LAMBDA = 0.45        # 0.95 - lam = 0.455 + 0.1 lam
CODE_START = (0.99, 0.80)
CODE_MEET, CODE_EPOCHS = 0.895, 50


def dac_thresholds(epoch: float, schedule: ThresholdSchedule = "paper",
                   meet_epochs: float | None = None) -> tuple[float, float]:
    """``(u, l)`` at (0-based) ``epoch`` for the ``"paper"`` or ``"code"`` schedule (module doc)."""
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if meet_epochs is not None and meet_epochs <= 0:
        raise ValueError(f"meet_epochs must be > 0, got {meet_epochs}")
    if schedule == "paper":
        progress = epoch * PAPER_STEP if meet_epochs is None else epoch / meet_epochs * PAPER_MEET_LAMBDA
        lam = min(progress, PAPER_MEET_LAMBDA)
        upper, lower = 0.95 - lam, 0.455 + 0.1 * lam
        return max(upper, lower), lower     # they meet at 0.5 (float rounding kept out)
    if schedule == "code":
        span = CODE_EPOCHS if meet_epochs is None else meet_epochs
        t = min(epoch / span, 1.0)
        upper, lower = CODE_START[0] - t * (CODE_START[0] - CODE_MEET), CODE_START[1] + t * (CODE_MEET - CODE_START[1])
        return max(upper, lower), lower
    raise ValueError(f"unknown DAC threshold schedule {schedule!r}; use 'paper' or 'code'")


def label_features(logits: torch.Tensor) -> torch.Tensor:
    """``softmax(z) / ||softmax(z)||``: DAC's label features ``(B, k)``."""
    return F.normalize(F.softmax(logits.float(), dim=1), dim=1)


def select_pairs(sim: torch.Tensor, upper: float, lower: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Bool masks ``(same, different)`` of ``sim (B, B')``: ``sim > upper`` / ``sim < lower``."""
    sim = sim.detach()
    return sim > upper, sim < lower


class DACLoss(nn.Module):
    """Binary cross-entropy on the adaptively selected pairs (see module doc)."""

    def __init__(self, eps: float = 1e-7):
        super().__init__()
        self.eps = float(eps)

    def forward(self, logits: torch.Tensor, *, upper: float, lower: float,
                all_logits: torch.Tensor | None = None, offset: int = 0,
                select_logits: torch.Tensor | None = None, all_select_logits: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss over pairs (local row ``i``, global row ``j``); ``offset`` is the global index of
        the first local row (to leave out the diagonal). Pairs are selected on ``select_logits``
        when given (module doc). Returns the loss and the fraction of "same" / "different"
        pairs."""
        if logits.ndim != 2:
            raise ValueError(f"expected logits (B, k), got {tuple(logits.shape)}")
        if not 0.0 <= lower <= upper <= 1.0:
            raise ValueError(f"need 0 <= lower <= upper <= 1, got lower={lower}, upper={upper}")
        all_logits = logits if all_logits is None else all_logits
        f, g = label_features(logits), label_features(all_logits)
        sim = (f @ g.t()).clamp(self.eps, 1 - self.eps)
        if select_logits is None:
            same, diff = select_pairs(sim, upper, lower)
        else:
            sel_rows = select_logits.detach()
            sel_cols = sel_rows if all_select_logits is None else all_select_logits.detach()
            if sel_rows.shape != logits.shape or sel_cols.shape != all_logits.shape:
                raise ValueError(f"select_logits {tuple(sel_rows.shape)} / {tuple(sel_cols.shape)} must "
                                 f"match logits {tuple(logits.shape)} / {tuple(all_logits.shape)}")
            same, diff = select_pairs(label_features(sel_rows) @ label_features(sel_cols).t(), upper, lower)
        off_diag = torch.ones_like(same)
        rows = torch.arange(f.shape[0], device=f.device)
        off_diag[rows, rows + offset] = False
        same, diff = same & off_diag, diff & off_diag
        n = (same | diff).sum()
        bce = -(torch.log(sim) * same).sum() - (torch.log1p(-sim) * diff).sum()
        loss = bce / n.clamp(min=1)
        total = float(off_diag.sum().clamp(min=1))
        return loss, {"pairs_same": float(same.sum()) / total, "pairs_different": float(diff.sum()) / total}


__all__ = ["DACLoss", "ThresholdSchedule", "dac_thresholds", "label_features", "select_pairs"]
