"""Per-cluster numbers for the report: sizes, purity, majority class, confusion matrix.

Kept apart from the HTML so the numbers can be tested (and reused) without parsing a page.
Labels equal to ``-1`` in ``labels_true`` mean "unknown" (see `ImageStore.labels`) and are
left out of purity and the confusion matrix, but still count towards cluster sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from deepclust.evaluate.metrics import contingency


@dataclass
class ClusterSummary:
    """What the report says about one cluster."""

    cluster: int                  # cluster id as found in labels_pred
    size: int                     # number of members
    members: np.ndarray           # (size,) int64 indices into the data set, increasing
    purity: float | None          # share of labelled members in the majority class
    majority_class: int | None    # that class id (index into class_names)
    n_labelled: int               # members whose true label is known (!= -1)


def summarize_clusters(labels_pred: np.ndarray, labels_true: np.ndarray | None = None) -> list[ClusterSummary]:
    """One `ClusterSummary` per cluster id, largest cluster first (ties: smaller id first).

    Purity is ``max_c |{i in cluster : y_i = c}| / |{i in cluster : y_i known}|``; it is None
    when no labels are given or no member of the cluster has a known label.
    """
    labels_pred = np.asarray(labels_pred, dtype=np.int64)
    cluster_ids, sizes = np.unique(labels_pred, return_counts=True)
    # Sort by size descending, then by id: np.lexsort uses the last key as primary.
    order = np.lexsort((cluster_ids, -sizes))
    summaries = []
    for position in order:
        cluster = int(cluster_ids[position])
        members = np.flatnonzero(labels_pred == cluster)
        purity = majority = None
        n_labelled = 0
        if labels_true is not None:
            known = np.asarray(labels_true, dtype=np.int64)[members]
            known = known[known >= 0]
            n_labelled = int(known.size)
            if n_labelled:
                classes, counts = np.unique(known, return_counts=True)
                best = int(np.argmax(counts))  # first maximum: the smallest class id wins ties
                majority = int(classes[best])
                purity = float(counts[best] / n_labelled)
        summaries.append(
            ClusterSummary(cluster, int(sizes[position]), members, purity, majority, n_labelled)
        )
    return summaries


# The report's confusion matrix is the evaluation's contingency table (one implementation).
confusion_matrix = contingency


def hungarian_column_order(cm: np.ndarray) -> np.ndarray:
    """Column permutation that puts each class's best-matching cluster on the diagonal.

    The one-to-one matching maximises the total of matched counts (Hungarian algorithm, the
    same matching as the ACC metric). Matched columns come first in row order, so a good
    clustering shows a bright diagonal; unmatched columns (more clusters than classes)
    follow, ordered by their majority row so that over-split classes sit together.
    """
    cm = np.asarray(cm)
    n_rows, n_cols = cm.shape
    if n_rows == 0 or n_cols == 0:
        return np.arange(n_cols)
    rows, cols = linear_sum_assignment(-cm)
    matched = [int(c) for _, c in sorted(zip(rows.tolist(), cols.tolist()))]
    matched_set = set(matched)
    rest = [c for c in range(n_cols) if c not in matched_set]
    rest.sort(key=lambda c: (int(np.argmax(cm[:, c])), -int(cm[:, c].sum()), c))
    return np.asarray(matched + rest, dtype=np.int64)
