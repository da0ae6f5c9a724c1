"""Weighted k-nearest-neighbour classifier on frozen features, as in DINO (Caron et al., ICCV 2021).

Features are L2-normalised; for each test sample the k training samples with the highest
cosine similarity ``s_i`` vote for their class with weight ``exp(s_i / T)`` (DINO: k=20,
T=0.07, following Wu et al. 2018). The class with the largest total weight is predicted.
The test set is processed in chunks so memory stays ``O(chunk * N_train)``.
"""

from __future__ import annotations

import numpy as np
import torch

from deepclust.cluster.validation import InvalidInputError, check_features, check_labels, check_same_length


def _prepare(train_x, train_y, test_x):
    train_x = check_features(train_x, "train_x")
    test_x = check_features(test_x, "test_x")
    train_y = check_labels(train_y, "train_y")
    check_same_length(train_x, train_y, "train_x", "train_y")
    if train_x.shape[1] != test_x.shape[1]:
        raise InvalidInputError(f"train_x has {train_x.shape[1]} features, test_x {test_x.shape[1]}; they must match.")
    keep = train_y >= 0  # unknown (-1) training labels cannot vote
    if not keep.any():
        raise InvalidInputError("train_y has no known (>= 0) label; k-NN needs labelled training samples.")
    return train_x[keep], train_y[keep], test_x


@torch.no_grad()
def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    k: int = 20,
    T: float = 0.07,
    *,
    chunk_size: int = 256,
    device: str = "cpu",
) -> np.ndarray:
    """Predicted class ``(N_test,)`` int64 for each test row (see module docstring).

    ``k`` is capped at the number of labelled training samples.
    """
    train_x, train_y, test_x = _prepare(train_x, train_y, test_x)
    if k < 1 or not T > 0:
        raise InvalidInputError(f"need k >= 1 and T > 0, got k={k}, T={T}.")
    k = min(int(k), len(train_x))
    n_classes = int(train_y.max()) + 1
    train_f = torch.nn.functional.normalize(torch.from_numpy(train_x).to(device), dim=1)
    train_labels = torch.from_numpy(train_y).to(device)
    predictions = np.empty(len(test_x), dtype=np.int64)
    for start in range(0, len(test_x), chunk_size):
        feats = torch.nn.functional.normalize(torch.from_numpy(test_x[start : start + chunk_size]).to(device), dim=1)
        similarity = feats @ train_f.T  # (chunk, N_train)
        sims, idx = similarity.topk(k, dim=1, largest=True, sorted=True)
        neighbour_labels = train_labels[idx]  # (chunk, k)
        votes = torch.zeros(len(feats), n_classes, dtype=sims.dtype, device=device)
        votes.scatter_add_(1, neighbour_labels, (sims / T).exp())
        predictions[start : start + chunk_size] = votes.argmax(dim=1).cpu().numpy()
    return predictions


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    T: float = 0.07,
    *,
    chunk_size: int = 256,
    device: str = "cpu",
) -> float:
    """Top-1 accuracy in [0, 1] of `knn_predict` on test samples with a known (>= 0) label."""
    test_y = check_labels(test_y, "test_y")
    check_same_length(test_x, test_y, "test_x", "test_y")
    known = test_y >= 0
    if not known.any():
        raise InvalidInputError("test_y has no known (>= 0) label; nothing to score.")
    pred = knn_predict(train_x, train_y, np.asarray(test_x)[known], k, T, chunk_size=chunk_size, device=device)
    return float((pred == test_y[known]).mean())
