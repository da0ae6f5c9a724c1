"""Linear probe: multinomial logistic regression on frozen, standardised features.

The usual self-supervised evaluation trains a linear classifier on frozen features. To stay
fast on a CPU we fit it full-batch with L-BFGS (strong Wolfe line search) instead of SGD over
many epochs, and choose the L2 weight decay from a small grid on a stratified held-out part of
the training set, then refit on all of it with the chosen value.

Objective: ``mean_i CE(W z_i + b, y_i) + wd/2 * ||W||^2`` with ``z`` the features
standardised by the training mean and standard deviation (bias not decayed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from deepclust.cluster.validation import InvalidInputError, check_features, check_labels, check_same_length

DEFAULT_WEIGHT_DECAYS = (0.0, 1e-4, 1e-3, 1e-2)


@dataclass
class LinearProbeResult:
    accuracy: float  # test top-1 accuracy in [0, 1]
    weight_decay: float  # value chosen on the held-out split
    val_accuracy: dict[float, float] = field(default_factory=dict)  # held-out accuracy per weight decay


def _fit(z: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, max_iter: int) -> torch.nn.Linear:
    model = torch.nn.Linear(z.shape[1], n_classes).to(z.device)
    torch.nn.init.zeros_(model.weight)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=max_iter, history_size=10,
                                  line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(z), y) + 0.5 * weight_decay * model.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return model


@torch.no_grad()
def _accuracy(model: torch.nn.Linear, z: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(z).argmax(dim=1) == y).float().mean()) if len(y) else 0.0


def _stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of held-out rows: ``fraction`` of every class with at least 2 samples."""
    held = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        n_out = int(round(fraction * len(idx)))
        if len(idx) >= 2 and n_out >= 1:
            held[rng.choice(idx, size=min(n_out, len(idx) - 1), replace=False)] = True
    return held


def fit_linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    max_iter: int = 100,
    seed: int = 0,
    device: str = "cpu",
) -> LinearProbeResult:
    """Train the probe (weight decay picked on a held-out split) and score it on the test set.

    Rows with label -1 (unknown) are dropped from both sets. Test classes absent from the
    training set count as errors.
    """
    train_x = check_features(train_x, "train_x")
    test_x = check_features(test_x, "test_x")
    train_y = check_labels(train_y, "train_y")
    test_y = check_labels(test_y, "test_y")
    check_same_length(train_x, train_y, "train_x", "train_y")
    check_same_length(test_x, test_y, "test_x", "test_y")
    if train_x.shape[1] != test_x.shape[1]:
        raise InvalidInputError(f"train_x has {train_x.shape[1]} features, test_x {test_x.shape[1]}; they must match.")
    if not weight_decays or min(weight_decays) < 0:
        raise InvalidInputError("weight_decays must be a non-empty list of values >= 0.")
    train_x, train_y = train_x[train_y >= 0], train_y[train_y >= 0]
    test_x, test_y = test_x[test_y >= 0], test_y[test_y >= 0]
    classes = np.unique(train_y)
    if len(classes) < 2 or len(test_y) == 0:
        raise InvalidInputError("a linear probe needs at least 2 labelled classes in train and 1 labelled test sample.")

    # Contiguous class ids; unseen test classes map to -1 (never predicted -> wrong).
    lookup = {int(c): i for i, c in enumerate(classes)}
    y_train = np.array([lookup[int(c)] for c in train_y], dtype=np.int64)
    y_test = np.array([lookup.get(int(c), -1) for c in test_y], dtype=np.int64)
    mean, std = train_x.mean(axis=0), train_x.std(axis=0) + 1e-6

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((a - mean) / std).astype(np.float32)).to(device)

    held = _stratified_holdout(y_train, val_fraction, np.random.default_rng(seed))
    val_accuracy: dict[float, float] = {}
    best_wd = float(weight_decays[0])
    if held.any() and len(weight_decays) > 1:
        z_fit, y_fit = tensor(train_x[~held]), torch.from_numpy(y_train[~held]).to(device)
        z_val, y_val = tensor(train_x[held]), torch.from_numpy(y_train[held]).to(device)
        for wd in weight_decays:
            val_accuracy[float(wd)] = _accuracy(_fit(z_fit, y_fit, len(classes), float(wd), max_iter), z_val, y_val)
        # Ties go to the larger weight decay (simpler model).
        best_wd = max(val_accuracy, key=lambda wd: (val_accuracy[wd], wd))
    model = _fit(tensor(train_x), torch.from_numpy(y_train).to(device), len(classes), best_wd, max_iter)
    accuracy = _accuracy(model, tensor(test_x), torch.from_numpy(y_test).to(device))
    return LinearProbeResult(accuracy=accuracy, weight_decay=best_wd, val_accuracy=val_accuracy)


def linear_probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    weight_decays: tuple[float, ...] = DEFAULT_WEIGHT_DECAYS,
    val_fraction: float = 0.2,
    max_iter: int = 100,
    seed: int = 0,
    device: str = "cpu",
) -> float:
    """Test top-1 accuracy in [0, 1] of `fit_linear_probe`."""
    return fit_linear_probe(
        train_x, train_y, test_x, test_y, weight_decays=weight_decays, val_fraction=val_fraction,
        max_iter=max_iter, seed=seed, device=device,
    ).accuracy
