"""Reports: a self-contained HTML gallery of a clustering, and plots usable on their own.

- `write_report(out_dir, images=..., labels_pred=..., paths=..., ...)` -> ``out_dir/report.html``
- `plot_embedding_2d`, `plot_confusion`, `plot_cluster_sizes`, `plot_training_curves` -> PNG
- `write_curation_report(out_dir, images=..., paths=..., groups=..., summary=...)` -> ``out_dir/curation.html``
"""

from deepclust.report.curation import write_curation_report
from deepclust.report.html import write_report
from deepclust.report.plots import (
    plot_cluster_sizes,
    plot_confusion,
    plot_embedding_2d,
    plot_training_curves,
    project_2d,
)
from deepclust.report.stats import ClusterSummary, confusion_matrix, hungarian_column_order, summarize_clusters

__all__ = [
    "write_report",
    "write_curation_report",
    "plot_embedding_2d",
    "plot_confusion",
    "plot_cluster_sizes",
    "plot_training_curves",
    "project_2d",
    "ClusterSummary",
    "summarize_clusters",
    "confusion_matrix",
    "hungarian_column_order",
]
