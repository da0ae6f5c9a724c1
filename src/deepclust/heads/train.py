"""Train clustering heads on cached embeddings: SCAN (+ self-labelling) or TEMI.

`train_heads(x, k, config)` is the whole stage, on a feature matrix (no images, no backbone):

1. standardise the features (centre, one global scale) and mine each row's ``n_neighbours``
   nearest neighbours (`deepclust.heads.neighbours.mine_neighbours`, cosine, faiss);
2. train ``n_heads`` heads at once (`MultiHead`) on (anchor, random mined neighbour) pairs:
   ``scan``: `scan_loss` on each head; ``temi``: `temi_loss` with an EMA teacher (momentum
   cosine from ``teacher_momentum`` to 1) and the teacher's cluster marginal;
3. keep the head with the lowest loss over the whole data set (SCAN's choice: no labels);
4. ``self_label``: fine-tune that head with `self_label_loss` (weak view: the clean features;
   strong view: feature dropout + Gaussian noise).

On cached embeddings the "augmented views" of SCAN are the embeddings themselves: the
neighbour *is* the other view; ``feature_noise`` / ``feature_dropout`` add optional
feature-space perturbations (0 by default). See docs/heads.md for the choices.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from deepclust.core.device import resolve_device
from deepclust.core.ema import ema_update_
from deepclust.core.schedules import cosine_momentum_schedule
from deepclust.errors import DeepclustError
from deepclust.heads.losses import scan_loss, self_label_loss, temi_loss, update_marginal
from deepclust.heads.module import MultiHead
from deepclust.heads.neighbours import mine_neighbours, neighbour_purity

HEAD_KINDS = ("scan", "temi")


class HeadConfigError(DeepclustError, ValueError):
    """A head option has a wrong value."""


@dataclass
class HeadConfig:
    """Options of `train_heads` (defaults: SCAN's where they transfer to cached features)."""

    kind: str = "scan"              # "scan" | "temi"
    n_heads: int = 10               # heads trained at once; the lowest-loss one is kept
    epochs: int = 100
    batch_size: int = 256
    lr: float | None = None         # AdamW; None: 1e-2 for linear heads, 1e-3 for MLP heads
    weight_decay: float = 1e-4
    n_neighbours: int = 20          # SCAN: 20 mined neighbours per image
    hidden_dim: int = 0             # 0: linear heads (SCAN's; CPU-fast); > 0: a 2-layer MLP (TEMI's kind)
    cosine: bool | None = None      # cosine-similarity logits; None: True for temi (its last layer)
    entropy_weight: float = 5.0     # SCAN's published configs (its code's default is 2.0)
    feature_noise: float = 0.0      # std of Gaussian noise on the standardised features
    feature_dropout: float = 0.0    # dropout on the features of both views
    self_label: bool = False
    self_label_epochs: int = 50
    threshold: float = 0.99         # confidence of a pseudo-label (SCAN: 0.99)
    class_balance: bool = True      # inverse-frequency weights in the self-label CE
    strong_noise: float = 0.1       # the strong view of self-labelling: noise + dropout
    strong_dropout: float = 0.25
    beta: float = 0.6               # TEMI's beta
    student_temp: float = 0.1       # TEMI's temperatures
    teacher_temp: float = 0.04
    teacher_momentum: float = 0.996  # TEMI's EMA teacher (cosine to 1)
    marginal_momentum: float = 0.9  # TEMI's cluster-marginal EMA
    seed: int = 0
    device: str = "cpu"
    progress: bool = False

    def __post_init__(self) -> None:
        if self.kind not in HEAD_KINDS:
            raise HeadConfigError(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.kind!r}.")
        for name in ("n_heads", "epochs", "batch_size", "n_neighbours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise HeadConfigError(f"{name} must be a positive integer, got {value!r}.")
        if self.entropy_weight < 0:
            raise HeadConfigError(f"entropy_weight must be >= 0, got {self.entropy_weight}.")
        if not 0.0 < self.threshold < 1.0:
            raise HeadConfigError(f"threshold must be in (0, 1), got {self.threshold}.")
        for name in ("feature_dropout", "strong_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise HeadConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}.")
        hidden = self.hidden_dim
        if isinstance(hidden, bool) or not isinstance(hidden, (int, np.integer)) or hidden < 0:
            raise HeadConfigError(f"hidden_dim must be an integer >= 0 (0: linear heads), got {self.hidden_dim!r}.")
        if self.cosine is None:
            self.cosine = self.kind == "temi"
        if self.lr is None:
            self.lr = 1e-2 if self.hidden_dim == 0 else 1e-3

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if key not in ("device", "progress")}


@dataclass
class HeadResult:
    """What `train_heads` produced.

    Attributes:
        labels: ``(N,)`` argmax of the kept head; probs: ``(N, K)`` its probabilities.
        head: the kept head (a one-head `MultiHead`); mean/scale: the input standardisation.
        losses: final loss of every head over the whole data; best_head: the kept one's index.
        loss: the kept head's loss (before self-labelling); history: mean loss per epoch.
        neighbour_purity: agreement of mined neighbours' labels (None without labels).
        confident: fraction of samples above ``threshold`` at the end of self-labelling.
        seconds: wall time of each stage ("neighbours", "heads", "self_label").
    """

    labels: np.ndarray
    probs: np.ndarray
    head: MultiHead
    mean: np.ndarray
    scale: float
    config: HeadConfig
    losses: list[float]
    best_head: int
    loss: float
    history: list[float] = field(default_factory=list)
    self_label_history: list[float] = field(default_factory=list)
    neighbour_purity: float | None = None
    confident: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(N, K)`` probabilities of the kept head for new rows (same standardisation)."""
        z = torch.from_numpy(((np.asarray(x, dtype=np.float32) - self.mean) / self.scale).astype(np.float32))
        with torch.no_grad():
            return F.softmax(self.head.cpu()(z)[0] * logit_scale(self.config), dim=-1).numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(axis=1).astype(np.int64)

    def info(self) -> dict[str, Any]:
        """The JSON-ready summary that goes into metrics.json under ``head``."""
        def rounded(values: list[float]) -> list[float]:
            return [round(v, 6) for v in values]

        return {"kind": self.config.kind, "loss": round(self.loss, 6), "best_head": self.best_head,
                "head_losses": rounded(self.losses), "loss_curve": rounded(self.history),
                "self_label": self.config.self_label, "self_label_curve": rounded(self.self_label_history),
                "confident": self.confident, "neighbour_purity": self.neighbour_purity,
                "config": self.config.to_dict(), "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def _views(z: Tensor, noise: float, dropout: float, gen: torch.Generator) -> Tensor:
    if noise:
        z = z + noise * torch.randn(z.shape, generator=gen).to(z.device)
    if dropout:
        keep = (torch.rand(z.shape, generator=gen) >= dropout).to(z.device)
        z = z * keep / (1 - dropout)
    return z


def _batches(n: int, batch_size: int, gen: torch.Generator) -> list[Tensor]:
    order = torch.randperm(n, generator=gen)
    return [order[i:i + batch_size] for i in range(0, n, batch_size) if n - i >= min(batch_size, n) // 2 or i == 0]


def _pick(neighbours: Tensor, idx: Tensor, gen: torch.Generator) -> Tensor:
    """One random mined neighbour of each anchor (SCAN's NeighborsDataset)."""
    col = torch.randint(neighbours.shape[1], (len(idx),), generator=gen)
    return neighbours[idx, col]


def _train_pairs(z: Tensor, nb: Tensor, k: int, cfg: HeadConfig, gen: torch.Generator
                 ) -> tuple[MultiHead, list[float], dict[str, Any]]:
    """The pair-training loop shared by SCAN and TEMI; returns the head used for predictions."""
    student = MultiHead(z.shape[1], k, cfg.n_heads, hidden_dim=int(cfg.hidden_dim), cosine=bool(cfg.cosine),
                        seed=cfg.seed).to(z.device)
    optim = torch.optim.AdamW(student.parameters(), lr=float(cfg.lr or 1e-2), weight_decay=cfg.weight_decay)
    temi = cfg.kind == "temi"
    teacher = copy.deepcopy(student).requires_grad_(False) if temi else None
    marginal = torch.full((cfg.n_heads, k), 1.0 / k, device=z.device)
    steps_per_epoch = len(_batches(len(z), cfg.batch_size, torch.Generator().manual_seed(0)))
    momentum = cosine_momentum_schedule(cfg.teacher_momentum, 1.0, cfg.epochs * steps_per_epoch)
    history: list[float] = []
    step = 0
    for _ in tqdm(range(cfg.epochs), desc=f"{cfg.kind} heads", disable=not cfg.progress):
        total = 0.0
        batches = _batches(len(z), cfg.batch_size, gen)
        for idx in batches:
            a = _views(z[idx], cfg.feature_noise, cfg.feature_dropout, gen)
            b = _views(z[_pick(nb, idx, gen)], cfg.feature_noise, cfg.feature_dropout, gen)
            if teacher is not None:
                with torch.no_grad():
                    ta, tb = teacher(a), teacher(b)
                marginal = update_marginal(marginal, ta, tb, teacher_temp=cfg.teacher_temp,
                                           momentum=cfg.marginal_momentum)
                per_head = temi_loss(student(a), student(b), ta, tb, marginal, beta=cfg.beta,
                                     student_temp=cfg.student_temp, teacher_temp=cfg.teacher_temp)
            else:
                per_head = scan_loss(student(a), student(b), cfg.entropy_weight)[0]
            optim.zero_grad(set_to_none=True)
            per_head.sum().backward()
            optim.step()
            if teacher is not None:
                ema_update_(teacher, student, float(momentum[min(step, len(momentum) - 1)]))
            step += 1
            total += float(per_head.detach().mean())
        history.append(total / len(batches))
    return (teacher if teacher is not None else student), history, {"marginal": marginal}


@torch.no_grad()
def _final_losses(head: MultiHead, z: Tensor, nb: Tensor, cfg: HeadConfig, marginal: Tensor) -> Tensor:
    """Every head's loss over all (row, mined neighbour) pairs, without perturbations: ``(H,)``."""
    logits = head(z)
    total = torch.zeros(head.n_heads, device=z.device)
    for j in range(nb.shape[1]):  # one neighbour column at a time: memory O(H N K)
        other = logits[:, nb[:, j]]
        if cfg.kind == "temi":
            # The kept head is the teacher: its own predictions at both temperatures score it.
            total += temi_loss(logits, other, logits, other, marginal, beta=cfg.beta,
                               student_temp=cfg.student_temp, teacher_temp=cfg.teacher_temp)
        else:
            total += scan_loss(logits, other, cfg.entropy_weight)[0]
    return total / nb.shape[1]


def logit_scale(cfg: HeadConfig) -> float:
    """What the head's logits are multiplied by before a softmax outside the TEMI loss: 1 for
    SCAN's affine heads; ``1 / student_temp`` for TEMI's cosine logits (in [-1, 1])."""
    return 1.0 / cfg.student_temp if cfg.kind == "temi" else 1.0


def _self_label(head: MultiHead, z: Tensor, cfg: HeadConfig, gen: torch.Generator) -> tuple[list[float], float]:
    scale = logit_scale(cfg)
    optim = torch.optim.AdamW(head.parameters(), lr=float(cfg.lr or 1e-2), weight_decay=cfg.weight_decay)
    history: list[float] = []
    for _ in tqdm(range(cfg.self_label_epochs), desc="self-label", disable=not cfg.progress):
        total, batches = 0.0, _batches(len(z), cfg.batch_size, gen)
        for idx in batches:
            with torch.no_grad():
                weak = head(z[idx])[0] * scale
            strong = head(_views(z[idx], cfg.strong_noise, cfg.strong_dropout, gen))[0] * scale
            loss, _ = self_label_loss(strong, weak, cfg.threshold, cfg.class_balance)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            total += float(loss.detach())
        history.append(total / len(batches))
    with torch.no_grad():
        confident = float((F.softmax(head(z)[0] * scale, -1).max(dim=-1).values > cfg.threshold).float().mean())
    return history, confident


def train_heads(x: np.ndarray, k: int, config: HeadConfig | None = None, *, labels: np.ndarray | None = None,
                **options: Any) -> HeadResult:
    """Train clustering heads on ``x`` ``(N, D)`` into ``k`` clusters (see the module doc).

    Args:
        x: cached embeddings (already in the clustering space, e.g. whitened).
        k: clusters, ``2 <= k <= N``.
        config: a `HeadConfig`; keyword ``options`` override its fields (``kind="temi"``...).
        labels: known labels ``(N,)`` (-1 unknown), used only to report neighbour purity.
    """
    cfg = HeadConfig(**{**(asdict(config) if config is not None else {}), **options})
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2 or not 2 <= int(k) <= len(x):
        raise HeadConfigError(f"heads need (N, D) features and 2 <= k <= N; got shape {x.shape} and k={k}.")
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    mean = x.mean(axis=0)
    scale = float(np.sqrt(((x - mean) ** 2).sum(axis=1).mean() / x.shape[1])) or 1.0
    neighbours = mine_neighbours(x, cfg.n_neighbours)
    seconds = {"neighbours": time.perf_counter() - start}
    z = torch.from_numpy((x - mean) / scale).to(device)
    nb = torch.from_numpy(neighbours).to(device)
    heads, history, state = _train_pairs(z, nb, int(k), cfg, gen)
    losses = _final_losses(heads, z, nb, cfg, state["marginal"])
    best = int(torch.argmin(losses))
    head = heads.select(best).to(device)
    seconds["heads"] = time.perf_counter() - start - seconds["neighbours"]
    self_history: list[float] = []
    confident = None
    if cfg.self_label:
        tick = time.perf_counter()
        self_history, confident = _self_label(head, z, cfg, gen)
        seconds["self_label"] = time.perf_counter() - tick
    with torch.no_grad():
        probs = F.softmax(head(z)[0] * logit_scale(cfg), dim=-1).cpu().numpy()
    return HeadResult(labels=probs.argmax(axis=1).astype(np.int64), probs=probs, head=head.cpu(), mean=mean,
                      scale=scale, config=cfg, losses=[float(v) for v in losses], best_head=best,
                      loss=float(losses[best]), history=history, self_label_history=self_history,
                      neighbour_purity=neighbour_purity(neighbours, labels), confident=confident, seconds=seconds)


__all__ = ["HEAD_KINDS", "HeadConfig", "HeadConfigError", "HeadResult", "train_heads"]
