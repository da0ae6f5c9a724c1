"""Clustering metrics against ground-truth labels: ACC (Hungarian), many-to-one ACC, NMI, ARI.

Conventions used across deep-clustering papers (e.g. SCAN, Van Gansbeke et al. 2020):

* ACC: best one-to-one map between clusters and classes (Hungarian algorithm on the
  contingency table, `scipy.optimize.linear_sum_assignment`); works when the number of
  clusters differs from the number of classes (rectangular table: unmatched clusters count
  as wrong, so over-clustering is penalised).
* many-to-one ACC: each cluster is mapped to its majority class (rewards over-clustering;
  report it beside ACC, never instead of it).
* NMI with the arithmetic mean normaliser (scikit-learn's default), ARI.

Entries whose true label is ``-1`` (unknown) are ignored by every metric; predictions are
taken as given (a ``-1`` prediction is just another cluster id).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from deepclust.cluster.validation import InvalidInputError, check_labels, check_same_length

UNKNOWN = -1


def _known(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    """Validated int64 arrays restricted to entries with a known true label."""
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred")
    check_same_length(y_true, y_pred, "y_true", "y_pred")
    keep = y_true != UNKNOWN
    if not keep.any():
        raise InvalidInputError(
            "no entry has a known true label (all are -1 or the arrays are empty); "
            "metrics need at least one labelled sample."
        )
    return y_true[keep], y_pred[keep]


def _contingency(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Counts table of shape (n_clusters, n_classes) over the distinct values present."""
    _, cls = np.unique(y_true, return_inverse=True)
    _, clu = np.unique(y_pred, return_inverse=True)
    table = np.zeros((clu.max() + 1, cls.max() + 1), dtype=np.int64)
    np.add.at(table, (clu, cls), 1)
    return table


def cluster_acc(y_true, y_pred) -> float:
    """Accuracy under the best one-to-one cluster-to-class map (Hungarian), in [0, 1]."""
    y_true, y_pred = _known(y_true, y_pred)
    table = _contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / len(y_true))


def many_to_one_acc(y_true, y_pred) -> float:
    """Accuracy when every cluster predicts its majority class, in [0, 1]."""
    y_true, y_pred = _known(y_true, y_pred)
    return float(_contingency(y_true, y_pred).max(axis=1).sum() / len(y_true))


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information (arithmetic-mean normaliser), in [0, 1]."""
    y_true, y_pred = _known(y_true, y_pred)
    return float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic"))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index, in [-0.5, 1] (0 for random labelings)."""
    y_true, y_pred = _known(y_true, y_pred)
    return float(adjusted_rand_score(y_true, y_pred))


def clustering_metrics(y_true, y_pred) -> dict:
    """All metrics at once.

    Returns:
        ``{"acc", "acc_many_to_one", "nmi", "ari"}`` as floats in the units above,
        ``"n_clusters_used"``: distinct predicted clusters over *all* entries, and
        ``"n_evaluated"``: entries with a known true label.
    """
    y_pred_all = check_labels(y_pred, "y_pred")
    known_true, known_pred = _known(y_true, y_pred_all)
    return {
        "acc": cluster_acc(known_true, known_pred),
        "acc_many_to_one": many_to_one_acc(known_true, known_pred),
        "nmi": nmi(known_true, known_pred),
        "ari": ari(known_true, known_pred),
        "n_clusters_used": int(len(np.unique(y_pred_all))),
        "n_evaluated": int(len(known_true)),
    }


def contingency(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts of (true class, cluster) pairs over the entries with a known class.

    Returns:
        ``cm`` of shape ``(n_classes, n_clusters)`` int64, the class ids (rows: those with a
        known label) and the cluster ids (columns: every predicted id, also those whose members
        are all unknown), both sorted ascending. The report's confusion matrix.
    """
    y_true = check_labels(y_true, "y_true")
    y_pred = check_labels(y_pred, "y_pred")
    check_same_length(y_true, y_pred, "y_true", "y_pred")
    known = y_true != UNKNOWN
    class_ids = np.unique(y_true[known])
    cluster_ids = np.unique(y_pred)
    cm = np.zeros((class_ids.size, cluster_ids.size), dtype=np.int64)
    np.add.at(cm, (np.searchsorted(class_ids, y_true[known]), np.searchsorted(cluster_ids, y_pred[known])), 1)
    return cm, class_ids, cluster_ids


def confusion_matrix(y_true, y_pred) -> np.ndarray:
    """Counts ``M[c, j]`` of samples of class ``c`` put in cluster ``j``.

    Indexed by the label values themselves (shape ``(max(y_true)+1, max(y_pred)+1)``) so rows
    line up with ``class_names`` and columns with cluster ids; unknown (-1) true labels are
    ignored. Both label arrays must be non-negative apart from the -1 true labels.
    """
    y_true, y_pred = _known(y_true, y_pred)
    if y_true.min() < 0 or y_pred.min() < 0:
        raise InvalidInputError("confusion_matrix needs non-negative class and cluster ids "
                                "(true labels may be -1 = unknown).")
    cm, class_ids, cluster_ids = contingency(y_true, y_pred)
    table = np.zeros((y_true.max() + 1, y_pred.max() + 1), dtype=np.int64)
    table[np.ix_(class_ids, cluster_ids)] = cm
    return table


def cluster_purity(y_true, y_pred) -> dict[int, float]:
    """Fraction of each cluster's labelled members that belong to its majority class.

    Clusters without any labelled member are left out.
    """
    y_true, y_pred = _known(y_true, y_pred)
    purity: dict[int, float] = {}
    for cluster in np.unique(y_pred):
        members = y_true[y_pred == cluster]
        purity[int(cluster)] = float(np.bincount(np.unique(members, return_inverse=True)[1]).max() / len(members))
    return purity
