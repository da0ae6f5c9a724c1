"""The one writer of a clustering and the one metrics function, for every entry point.

`clustering_metrics_info` gives the content of ``metrics.json`` with the same keys whoever
calls it (``deepclust cluster``, ``deepclust train``, the demo, the estimator);
`write_clustering` writes the files into a folder:

* ``assignments.csv`` -- ``path,cluster`` plus ``label`` (true class name, empty when
  unknown) when the store has labels, plus ``cluster_name`` (best CLIP name) with names; the
  csv module quotes fields as needed, so any file name round-trips;
* ``skipped.csv`` -- ``path,reason`` for every input that could not be used (header only if none);
* ``summary.txt`` -- one line per cluster: size, names, purity and majority class;
* ``report.html`` -- the gallery (unless ``report=False``), with the training curves of the
  run's ``log.csv`` when there is a run;
* ``metrics.json`` -- written last: its presence marks a finished clustering.

HDBSCAN's noise (cluster ``-1``) is handled in every file: ``assignments.csv`` writes -1;
``summary.txt`` and the report show it as its own group ("noise"); in ``metrics.json``
``acc``/``nmi``/``ari`` count noise as one more cluster (so dropping hard images never
raises a score), ``non_noise`` holds the same metrics over the clustered images only, and
``n_noise`` / ``noise_fraction`` the count. ``cluster_sizes`` lists the clusters 0..k-1.
"""

from __future__ import annotations

import errno
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deepclust.core.io import atomic_write_csv, atomic_write_text
from deepclust.errors import DeepclustError

log = logging.getLogger(__name__)

Names = Mapping[int, Sequence[tuple[str, float]]]

#: Keys of ``metrics.json`` that measure the clustering against the true labels.
QUALITY_KEYS = ("acc", "acc_many_to_one", "nmi", "ari", "n_clusters_used", "n_evaluated", "knn_acc")


def known_labels(store: Any) -> np.ndarray | None:
    """The store's labels, or None when it has none or none are known (-1 everywhere)."""
    labels = getattr(store, "labels", None)
    if labels is None:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    return labels if (labels >= 0).any() else None


def _plain(value: Any) -> Any:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    return value


def evaluate_clustering(labels_true: np.ndarray | None, labels_pred: np.ndarray, *,
                        features: np.ndarray | None = None, logits: np.ndarray | None = None,
                        knn_k: int = 20, seed: int = 0) -> dict[str, Any]:
    """Quality of a clustering: with labels ``acc, acc_many_to_one, nmi, ari,
    n_clusters_used, n_evaluated``, ``knn_acc`` (weighted k-NN on L2-normalised ``features``,
    seeded 80/20 split of the labelled images, T = 0.07); with a cluster head's ``logits``
    ``head_acc, head_nmi, head_ari, head_n_clusters_used`` (argmax); without labels only
    ``head_n_clusters_used``."""
    from deepclust.cluster.kmeans import l2_normalize
    from deepclust.evaluate.knn import knn_accuracy
    from deepclust.evaluate.metrics import clustering_metrics

    out: dict[str, Any] = {}
    head_pred = None if logits is None else np.asarray(logits).argmax(axis=1)
    if labels_true is None:
        if head_pred is not None:
            out["head_n_clusters_used"] = int(len(np.unique(head_pred)))
        return out
    out.update({key: _plain(v) for key, v in clustering_metrics(labels_true, labels_pred).items()})
    if features is not None:
        idx = np.random.default_rng([seed, 7919]).permutation(np.flatnonzero(labels_true >= 0))
        cut = int(round(0.8 * len(idx)))
        if 0 < cut < len(idx):
            x = l2_normalize(np.asarray(features, np.float32))
            out["knn_acc"] = float(knn_accuracy(x[idx[:cut]], labels_true[idx[:cut]], x[idx[cut:]],
                                                labels_true[idx[cut:]], k=min(int(knn_k), cut), T=0.07))
    if head_pred is not None:
        head = clustering_metrics(labels_true, head_pred)
        out.update({f"head_{key}": _plain(head[key]) for key in ("acc", "nmi", "ari", "n_clusters_used")})
    return out


def clustering_details(clustering: Any, labels_true: np.ndarray | None) -> dict[str, Any]:
    """How the clustering was made: ``clusterer``, ``reduce``, ``n_noise`` always; with noise
    ``noise_fraction`` and ``non_noise`` (acc / nmi / ari / n_evaluated over the non-noise
    images); ``k_choice`` (the silhouette curve) with ``k="auto"``; ``cluster_head`` (loss,
    every head's loss, curves, neighbour purity, options, stage times) with a head."""
    from deepclust.evaluate.metrics import clustering_metrics

    labels = np.asarray(clustering.labels, dtype=np.int64)
    reduction = getattr(clustering, "reduction", None)
    n_noise = int((labels < 0).sum())
    out: dict[str, Any] = {"clusterer": str(getattr(clustering, "clusterer", "kmeans")),
                           "reduce": reduction.info() if reduction is not None else None, "n_noise": n_noise}
    if n_noise:
        out["noise_fraction"] = round(n_noise / len(labels), 6)
        keep = labels >= 0
        if labels_true is not None and (labels_true[keep] >= 0).any():
            m = clustering_metrics(labels_true[keep], labels[keep])
            out["non_noise"] = {key: _plain(m[key]) for key in ("acc", "nmi", "ari", "n_evaluated")}
    if getattr(clustering, "k_choice", None) is not None:
        out["k_choice"] = clustering.k_choice.info()
    if getattr(clustering, "head", None) is not None:
        out["cluster_head"] = clustering.head.info()
    return out


def clustering_metrics_info(store: Any, clustering: Any, *, features: np.ndarray, spec: str,
                            logits: np.ndarray | None = None, config: Any = None, seed: int = 0,
                            n_init: int = 10, knn_k: int | None = None,
                            seconds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The content of ``metrics.json`` (see the module doc): quality (`evaluate_clustering`)
    then ``n_images, n_skipped, k, features, embed_dim, spherical, whiten_dim, balanced, seed,
    n_init, n_empty_repaired, cluster_sizes``, the run's ``method`` and ``backbone`` when there
    is one, and ``seconds_*`` timings."""
    labels = np.asarray(clustering.labels, dtype=np.int64)
    if knn_k is None:
        knn_k = int(getattr(config, "knn_k", 20)) if config is not None else 20
    info: dict[str, Any] = evaluate_clustering(known_labels(store), labels, features=features, logits=logits,
                                               knn_k=knn_k, seed=seed)
    info.update({
        "n_images": int(len(labels)),
        "n_skipped": int(len(getattr(store, "skipped", []) or [])),
        "k": int(clustering.k),
        "features": str(spec),
        "embed_dim": int(np.asarray(features).shape[1]),
        "spherical": bool(clustering.spherical),
        "whiten_dim": int(clustering.whiten_dim),
        "balanced": bool(clustering.balanced),
        "seed": int(seed),
        "n_init": int(n_init),
        "n_empty_repaired": int(clustering.n_empty_repaired),
        "cluster_sizes": clustering.sizes(),
    })
    info.update(clustering_details(clustering, known_labels(store)))
    if config is not None:
        info.update(method=str(config.method), backbone=str(config.backbone))
    for name, value in (seconds or {}).items():
        info[f"seconds_{name}"] = round(float(value), 3)
    return info


def class_name(label: int | None, class_names: Sequence[str] | None) -> str:
    if label is None or label < 0:
        return ""
    if class_names and label < len(class_names):
        return str(class_names[label])
    return str(label)


def format_summary(labels_pred: np.ndarray, labels_true: np.ndarray | None, class_names: Sequence[str] | None,
                   cluster_names: Names | None = None) -> str:
    """One line per cluster, largest first: size, names, purity and majority class."""
    from deepclust.report.stats import summarize_clusters

    lines = []
    for s in summarize_clusters(labels_pred, labels_true):
        line = (f"cluster {s.cluster:>3}" if s.cluster >= 0 else "noise      ") + f": {s.size:>6} images"
        if cluster_names and cluster_names.get(s.cluster):
            line += "  [" + ", ".join(f"{name} {score:.2f}" for name, score in cluster_names[s.cluster]) + "]"
        if s.purity is not None:
            line += f"  purity {s.purity:.2f}  majority {class_name(s.majority_class, class_names)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def write_assignments(path: Path, store: Any, labels: np.ndarray, cluster_names: Names | None = None) -> Path:
    """``path,cluster[,label][,cluster_name]`` for every clustered image."""
    labels_true = getattr(store, "labels", None)
    class_names = getattr(store, "class_names", None)
    header = ["path", "cluster"] + (["label"] if labels_true is not None else []) + \
        (["cluster_name"] if cluster_names else [])
    rows = []
    for i, (image_path, cluster) in enumerate(zip(store.paths, labels)):
        row: list[Any] = [image_path, int(cluster)]
        if labels_true is not None:
            row.append(class_name(int(labels_true[i]), class_names))
        if cluster_names:
            names = cluster_names.get(int(cluster))
            row.append(names[0][0] if names else "")  # the best name only; all are in metrics.json
        rows.append(row)
    return atomic_write_csv(path, header, rows)


def write_clustering(
    out_dir: str | Path,
    store: Any,
    labels: np.ndarray,
    *,
    info: dict[str, Any],
    embeddings: np.ndarray | None = None,
    cluster_names: Names | None = None,
    report: bool = True,
    run_dir: str | Path | None = None,
    cluster_extras: Mapping[int, Any] | None = None,
    title: str | None = None,
    progress: bool = False,
) -> dict[str, Path]:
    """Write the files of the module doc into ``out_dir``; returns ``{"assignments": path, ...}``.

    ``info`` is the content of metrics.json (`clustering_metrics_info`, plus names when given);
    ``run_dir``'s ``log.csv`` feeds the report's training curves. A write that fails (full
    disk, read-only folder) is a `DeepclustError` naming the folder, not a traceback.
    """
    try:
        return _write_clustering(Path(out_dir), store, labels, info=info, embeddings=embeddings,
                                 cluster_names=cluster_names, report=report, run_dir=run_dir,
                                 cluster_extras=cluster_extras, title=title, progress=progress)
    except OSError as exc:
        full = exc.errno == errno.ENOSPC
        raise DeepclustError(f"cannot write the results into {out_dir}: "
                             f"{'the disk is full' if full else exc.strerror or exc}"
                             f"{' (free some space and run again)' if full else ''}") from exc


def _write_clustering(out: Path, store: Any, labels: np.ndarray, *, info: dict[str, Any],
                      embeddings: np.ndarray | None, cluster_names: Names | None, report: bool,
                      run_dir: str | Path | None, cluster_extras: Mapping[int, Any] | None,
                      title: str | None, progress: bool) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json marks a finished clustering: drop one left by an earlier run first.
    (out / "metrics.json").unlink(missing_ok=True)
    labels = np.asarray(labels, dtype=np.int64)
    labels_true = known_labels(store)
    class_names = getattr(store, "class_names", None)
    summary = format_summary(labels, labels_true, class_names, cluster_names)
    files = {
        "assignments": write_assignments(out / "assignments.csv", store, labels, cluster_names),
        "skipped": atomic_write_csv(out / "skipped.csv", ["path", "reason"],
                                    [[p, r] for p, r in (getattr(store, "skipped", None) or [])]),
        "summary": atomic_write_text(out / "summary.txt", summary),
    }
    if report:
        from deepclust.report import write_report

        log_csv = Path(run_dir) / "log.csv" if run_dir is not None else None
        has_log = log_csv is not None and log_csv.is_file() and len(log_csv.read_text().splitlines()) > 1
        shown = {key: info[key] for key in info if key in QUALITY_KEYS or key.startswith("head_")}
        shown.update(report_details(info))
        files["report"] = Path(write_report(
            out, images=store.images, labels_pred=labels, paths=list(store.paths), embeddings=embeddings,
            labels_true=labels_true, class_names=class_names, metrics=shown or None,
            cluster_names=cluster_names, cluster_extras=cluster_extras,
            title=title or f"deepclust: {info.get('features', '')} features, k={info.get('k', '')}",
            skipped=list(getattr(store, "skipped", None) or []), progress=progress,
            training_log=log_csv if has_log else None,
        ))
    files["metrics"] = atomic_write_text(out / "metrics.json", json.dumps(info, indent=2) + "\n")
    return files


def report_details(info: Mapping[str, Any]) -> dict[str, Any]:
    """The report's lines for auto-k (choice and curve), noise, reduction and the head."""
    out: dict[str, Any] = {}
    if info.get("reduce"):
        out["reduce"] = f"{info['reduce']['method']} to {info['reduce']['n_components']} dims"
    choice = info.get("k_choice")
    if choice:
        lo, hi = choice["k_range"]
        out["k chosen"] = f"{choice['k']} ({choice['criterion']}, best of k = {lo}..{hi})"
        out[f"{choice['criterion']} by k"] = ", ".join(f"{k}: {v:.3f}" for k, v in choice["curve"].items())
    if info.get("clusterer") == "hdbscan" or info.get("n_noise"):
        out["noise (cluster -1, HDBSCAN)"] = int(info.get("n_noise", 0))
        out.update({f"{key} without noise": v for key, v in (info.get("non_noise") or {}).items()})
    head = info.get("cluster_head")
    if head:
        out["head"] = (f"{head['kind']}{' + self-label' if head['self_label'] else ''}: head {head['best_head']} "
                       f"of {len(head['head_losses'])} (lowest loss)")
        out["head loss"] = head["loss"]
        if head.get("neighbour_purity") is not None:
            out["neighbour purity"] = head["neighbour_purity"]
    return out


__all__ = ["clustering_metrics_info", "clustering_details", "report_details", "evaluate_clustering",
           "write_clustering", "write_assignments",
           "format_summary", "known_labels", "QUALITY_KEYS"]
