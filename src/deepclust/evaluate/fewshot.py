"""Few-shot classification with class prototypes on frozen features.

Each episode samples ``n_way`` classes, ``k_shot`` support and ``n_query`` query samples per
class; a query is given the class whose mean support feature (prototype, Snell et al. 2017)
is nearest in Euclidean distance, with all features L2-normalised first. We report the mean
accuracy over episodes and the 95% confidence half-width ``1.96 * std / sqrt(n_episodes)``,
the usual few-shot protocol.
"""

from __future__ import annotations

import numpy as np

from deepclust.cluster.kmeans import l2_normalize
from deepclust.cluster.validation import InvalidInputError, check_features, check_labels, check_same_length


def fewshot_accuracy(
    x: np.ndarray,
    y: np.ndarray,
    n_way: int = 5,
    k_shot: int = 5,
    n_query: int = 15,
    n_episodes: int = 600,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean episode accuracy and its 95% confidence half-width, both in [0, 1].

    Only classes with at least ``k_shot + n_query`` samples (and labels >= 0) take part.
    """
    x = l2_normalize(check_features(x, "x"))
    y = check_labels(y, "y")
    check_same_length(x, y, "x", "y")
    if min(n_way, k_shot, n_query, n_episodes) < 1:
        raise InvalidInputError("n_way, k_shot, n_query and n_episodes must all be >= 1.")
    classes, counts = np.unique(y[y >= 0], return_counts=True)
    eligible = classes[counts >= k_shot + n_query]
    if len(eligible) < n_way:
        raise InvalidInputError(
            f"{n_way}-way {k_shot}-shot episodes with {n_query} queries need {n_way} classes with at least "
            f"{k_shot + n_query} samples each; only {len(eligible)} qualify. Lower n_way, k_shot or n_query."
        )
    members = {int(c): np.flatnonzero(y == c) for c in eligible}
    rng = np.random.default_rng(seed)
    accuracies = np.empty(n_episodes)
    for episode in range(n_episodes):
        chosen = rng.choice(eligible, size=n_way, replace=False)
        prototypes, queries = [], []
        for c in chosen:
            picked = rng.choice(members[int(c)], size=k_shot + n_query, replace=False)
            prototypes.append(x[picked[:k_shot]].mean(axis=0))
            queries.append(x[picked[k_shot:]])
        protos = np.stack(prototypes)  # (n_way, D)
        query = np.concatenate(queries)  # (n_way * n_query, D)
        truth = np.repeat(np.arange(n_way), n_query)
        dist = (query**2).sum(1, keepdims=True) - 2 * query @ protos.T + (protos**2).sum(1)
        accuracies[episode] = (dist.argmin(axis=1) == truth).mean()
    return float(accuracies.mean()), float(1.96 * accuracies.std() / np.sqrt(n_episodes))
