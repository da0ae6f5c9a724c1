"""Evaluation: clustering metrics against labels and frozen-feature protocols (k-NN, linear probe, few-shot)."""

from deepclust.evaluate.fewshot import fewshot_accuracy
from deepclust.evaluate.knn import knn_accuracy, knn_predict
from deepclust.evaluate.linear_probe import LinearProbeResult, fit_linear_probe, linear_probe_accuracy
from deepclust.evaluate.metrics import (
    ari,
    cluster_acc,
    cluster_purity,
    clustering_metrics,
    confusion_matrix,
    many_to_one_acc,
    nmi,
)

__all__ = [
    "cluster_acc",
    "many_to_one_acc",
    "nmi",
    "ari",
    "clustering_metrics",
    "confusion_matrix",
    "cluster_purity",
    "knn_predict",
    "knn_accuracy",
    "fit_linear_probe",
    "linear_probe_accuracy",
    "LinearProbeResult",
    "fewshot_accuracy",
]
