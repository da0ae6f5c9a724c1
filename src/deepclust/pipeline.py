"""Cluster a source of images end to end: load -> features -> k-means -> files on disk.

This is the library function behind ``deepclust cluster`` and ``deepclust demo``; the
commands only parse arguments and print. Every stage is one call into its own module
(`deepclust.data.store`, `deepclust.features`, `deepclust.cluster`, `deepclust.evaluate`,
`deepclust.report`), so this file is glue and the output format, nothing more.

Files written into ``out_dir`` (each written to a temporary name, then renamed, so a crash
never leaves a half-written file behind):

* ``assignments.csv`` -- ``path,cluster`` plus ``label`` (true class name, empty when
  unknown) when the source has labels, plus ``cluster_name`` (best CLIP name) with a namer.
* ``metrics.json`` -- always ``n_images, n_skipped, k, features, cluster_sizes`` and timings
  (``seconds`` in all, ``seconds_features``, ``seconds_kmeans``); with labels also ``acc,
  acc_many_to_one, nmi, ari, n_clusters_used, n_evaluated`` (images with a known label).
* ``skipped.csv`` -- ``path,reason`` for every input that could not be used (header only if none).
* ``summary.txt`` -- one line per cluster: size, purity and majority class.
* ``report.html`` -- the gallery (unless ``report=False``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepclust.core.device import resolve_device
from deepclust.core.io import atomic_write_csv, atomic_write_text
from deepclust.errors import DeepclustError

log = logging.getLogger(__name__)

#: Feature kinds computed from pixels alone; anything else (a run dir, ``hf:...``) is learned.
PIXEL_FEATURES = ("raw", "pca")
DEFAULT_PCA_DIM = 50
#: Working-size caps of the image store: pixels/trained models vs pretrained (224 px) models.
DEFAULT_MAX_SIZE = 96
PRETRAINED_MAX_SIZE = 224
#: Built-in vocabulary used to name clusters when only a namer is given.
DEFAULT_VOCAB = "common"


@dataclass
class ClusterResult:
    """What `cluster_store` produced; the same numbers are in the files under `out_dir`."""

    labels: np.ndarray                    # (N,) int64 cluster id per usable image
    metrics: dict | None                  # acc/nmi/ari... when true labels are known, else None
    paths: list[str]                      # (N,) path of each clustered image, same order as labels
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # "assignments", "metrics", ... -> path
    summary: str = ""                     # the text of summary.txt
    info: dict = field(default_factory=dict)  # the full content of metrics.json
    cluster_names: dict[int, list[tuple[str, float]]] | None = None  # CLIP names, best first


def check_k(k: int, n_images: int | None = None) -> int:
    """Validate the number of clusters before (and, with `n_images`, after) loading."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise DeepclustError(f"k must be a whole number of clusters, got {k!r}.")
    if k < 2:
        raise DeepclustError(f"k={k}: the number of clusters must be at least 2 (e.g. --k 10).")
    if n_images is not None and k > n_images:
        raise DeepclustError(
            f"k={k} clusters requested but only {n_images} usable image(s) were found; "
            f"use --k {n_images} or fewer, or add images."
        )
    return int(k)


def cluster_source(
    source: str,
    *,
    k: int,
    out_dir: str | Path,
    features: str = "raw",
    model: str | None = None,
    size: int | None = None,
    seed: int = 0,
    n_init: int = 10,
    spherical: bool | None = None,
    balanced: bool = False,
    pca_dim: int = DEFAULT_PCA_DIM,
    whiten_dim: int | None = None,
    device: str = "auto",
    report: bool = True,
    namer: str | None = None,
    vocab: str = DEFAULT_VOCAB,
    attention: bool = False,
    progress: bool = True,
) -> ClusterResult:
    """Load `source` (folder, ``.npz``, ``digits``, known set) and cluster it into `k` groups.

    `model` (a trained run directory or ``hf:<id>``) takes precedence over `features`
    (``raw`` or ``pca``). `whiten_dim` PCA-whitens learned features before k-means
    (``deepclust.cluster.whiten``); None takes a trained run's ``cluster_whiten_dim``, 0 turns
    it off. `attention` adds each cluster's ViT attention maps to the report.
    `spherical=None` means: cosine k-means for learned features,
    Euclidean for pixels. `namer` (``hf:<CLIP id or dir>``) names each cluster with the best
    entries of `vocab` (built-in name, text file or ``"a,b,c"``; see `deepclust.naming`).
    Raises `DeepclustError` for a bad `k` or an unusable source.
    """
    from deepclust.data.store import load_images

    check_k(k)  # fail before minutes of decoding, not after
    if attention and not model:
        raise DeepclustError("attention maps need a ViT model: pass --model hf:<id> or a run trained "
                             "with a vit_* backbone (raw/pca features have no attention)")
    pretrained = [spec for spec in (model, namer) if spec and spec.startswith("hf:")]
    if pretrained:
        from deepclust.models.pretrained import resolve_model_dir

        # An offline machine without a local copy must hear so now, not after decoding.
        for spec in pretrained:
            resolve_model_dir(spec)
    # Pretrained ViTs resize to ~224 px themselves; keep enough pixels in the store for them.
    max_size = PRETRAINED_MAX_SIZE if model and model.startswith("hf:") else DEFAULT_MAX_SIZE
    if size is None and model and not model.startswith("hf:"):
        size = _trained_run_config(model).get("image_size")
    store = load_images(source, size=size, max_size=max_size, progress=progress)
    return cluster_store(
        store, k=k, out_dir=out_dir, features=features, model=model, seed=seed, n_init=n_init,
        spherical=spherical, balanced=balanced, pca_dim=pca_dim, whiten_dim=whiten_dim,
        device=device, report=report,
        namer=namer, vocab=vocab, attention=attention, progress=progress,
    )


def _trained_run_config(run_dir: str) -> dict:
    """A trained run's config.json (its working size and k-means whitening make `--size`
    and `--whiten` optional), or {} when `run_dir` is not a run directory."""
    config = Path(run_dir) / "config.json"
    if not config.is_file():
        return {}  # extract_features will say what is wrong with the model spec
    try:
        data = json.loads(config.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def cluster_store(
    store,
    *,
    k: int,
    out_dir: str | Path,
    features: str = "raw",
    model: str | None = None,
    seed: int = 0,
    n_init: int = 10,
    spherical: bool | None = None,
    balanced: bool = False,
    pca_dim: int = DEFAULT_PCA_DIM,
    whiten_dim: int | None = None,
    device: str = "auto",
    report: bool = True,
    namer: str | None = None,
    vocab: str = DEFAULT_VOCAB,
    attention: bool = False,
    progress: bool = True,
    title: str | None = None,
) -> ClusterResult:
    """Cluster an already loaded `ImageStore` (see `cluster_source` for the arguments)."""
    from deepclust.cluster import balanced_assign, kmeans, pca_whiten
    from deepclust.features import extract_features

    start = time.perf_counter()
    n_images = len(store.paths)
    k = check_k(k, n_images)
    spec = model if model else features
    if model and features != "raw":
        log.info("--model %s is used; --features %s is ignored", model, features)
    if spec == "pca" and pca_dim >= n_images:
        pca_dim = max(1, n_images - 1)  # PCA cannot have more components than samples
    if spherical is None:
        spherical = spec not in PIXEL_FEATURES

    log.info("features: %s on %d images", spec, n_images)
    extra = {"pca_dim": pca_dim} if spec == "pca" else {}
    x = extract_features(store, spec, device=resolve_device(device), cache=True, **extra)
    features_done = time.perf_counter()
    if whiten_dim is None:  # a trained run's recipe says how its embeddings cluster best
        whiten_dim = int(_trained_run_config(model).get("cluster_whiten_dim", 0)) if model else 0
    if whiten_dim:
        x = pca_whiten(x, whiten_dim)
    log.info("k-means: k=%d, n_init=%d, %s%s", k, n_init, "cosine" if spherical else "euclidean",
             f", features whitened to {x.shape[1]} dims" if whiten_dim else "")
    result = kmeans(x, k, n_init=n_init, seed=seed, spherical=spherical)
    labels = np.asarray(result.labels, dtype=np.int64)
    if balanced:
        points = _unit_rows(x) if spherical else x
        # Cosine scores even for euclidean k-means: with -d^2 scores, a tight far-away cluster
        # gives codes of ~1e-9 toward other centroids and Sinkhorn cannot rebalance it.
        labels = np.asarray(balanced_assign(points, result.centroids), dtype=np.int64)
    kmeans_done = time.perf_counter()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json is written last and marks a finished run: drop one left by an earlier run.
    (out / "metrics.json").unlink(missing_ok=True)
    labels_true = _known_labels(store)
    metrics = _metrics(labels_true, labels)
    cluster_names = None
    if namer:
        from deepclust.naming import name_clusters

        log.info("naming clusters with %s (vocabulary: %s)", namer, vocab)
        cluster_names = name_clusters(namer, store.images, labels, vocab, top_n=3, progress=progress)

    info = {
        **(metrics or {}),
        "n_images": n_images,
        "n_skipped": len(store.skipped),
        "k": k,
        "features": spec,
        "spherical": bool(spherical),
        "whiten_dim": int(whiten_dim),
        "balanced": bool(balanced),
        "seed": seed,
        "n_init": n_init,
        "n_empty_repaired": int(result.n_empty_repaired),
        "cluster_sizes": np.bincount(labels, minlength=k).tolist(),
        "seconds_features": round(features_done - start, 3),
        "seconds_kmeans": round(kmeans_done - features_done, 3),
    }
    if cluster_names:
        info.update(namer=namer, vocab=vocab if isinstance(vocab, str) else list(vocab),
                    cluster_names={str(c): [[name, round(float(score), 4)] for name, score in names]
                                   for c, names in sorted(cluster_names.items())})
    summary = format_summary(labels, labels_true, store.class_names, cluster_names)
    files = {
        "assignments": _write_assignments(out / "assignments.csv", store, labels, cluster_names),
        "skipped": _write_skipped(out / "skipped.csv", store.skipped),
        "summary": atomic_write_text(out / "summary.txt", summary),
    }
    if report:
        from deepclust.report import write_report

        extras = None
        if attention:
            from deepclust.attention import cluster_attention_extras, load_attention_model

            log.info("attention maps of a few images per cluster (%s)", spec)
            attention_model, _ = load_attention_model(spec, resolve_device(device))
            extras = cluster_attention_extras(store.images, labels, attention_model)
        files["report"] = Path(write_report(
            out, images=store.images, labels_pred=labels, paths=list(store.paths), embeddings=x,
            labels_true=labels_true, class_names=store.class_names, metrics=metrics,
            cluster_names=cluster_names, cluster_extras=extras,
            title=title or f"deepclust: {spec} features, k={k}",
            skipped=list(store.skipped), progress=progress,
        ))
    # metrics.json last: its presence means the run finished.
    info["seconds"] = round(time.perf_counter() - start, 3)
    files["metrics"] = atomic_write_text(out / "metrics.json", json.dumps(info, indent=2) + "\n")
    return ClusterResult(labels=labels, metrics=metrics, paths=list(store.paths), out_dir=out,
                         files=files, summary=summary, info=info, cluster_names=cluster_names)


def format_summary(labels_pred: np.ndarray, labels_true: np.ndarray | None,
                   class_names: list[str] | None,
                   cluster_names: dict[int, list[tuple[str, float]]] | None = None) -> str:
    """One line per cluster, largest first: size, purity and majority class (when labels are known)."""
    from deepclust.report.stats import summarize_clusters

    lines = []
    for s in summarize_clusters(labels_pred, labels_true):
        line = f"cluster {s.cluster:>3}: {s.size:>6} images"
        if cluster_names and cluster_names.get(s.cluster):
            line += "  [" + ", ".join(f"{name} {score:.2f}" for name, score in cluster_names[s.cluster]) + "]"
        if s.purity is not None:
            line += f"  purity {s.purity:.2f}  majority {_class_name(s.majority_class, class_names)}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _class_name(label: int | None, class_names: list[str] | None) -> str:
    if label is None or label < 0:
        return ""
    if class_names and label < len(class_names):
        return str(class_names[label])
    return str(label)


def _known_labels(store) -> np.ndarray | None:
    """The store's labels, or None when it has none or none are known (-1 everywhere)."""
    if store.labels is None:
        return None
    labels = np.asarray(store.labels, dtype=np.int64)
    return labels if (labels >= 0).any() else None


def _metrics(labels_true: np.ndarray | None, labels_pred: np.ndarray) -> dict | None:
    """ACC/NMI/ARI over the images whose true label is known (-1 = unknown); None without labels."""
    if labels_true is None:
        return None
    from deepclust.evaluate.metrics import clustering_metrics

    return {key: (float(v) if isinstance(v, (float, np.floating)) else int(v))
            for key, v in clustering_metrics(labels_true, labels_pred).items()}


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _write_assignments(path: Path, store, labels: np.ndarray,
                       cluster_names: dict[int, list[tuple[str, float]]] | None) -> Path:
    labels_true = store.labels
    header = ["path", "cluster"]
    if labels_true is not None:
        header.append("label")
    if cluster_names:
        header.append("cluster_name")
    rows = []
    for i, (image_path, cluster) in enumerate(zip(store.paths, labels)):
        row = [image_path, int(cluster)]
        if labels_true is not None:
            row.append(_class_name(int(labels_true[i]), store.class_names))
        if cluster_names:
            names = cluster_names.get(int(cluster))
            row.append(names[0][0] if names else "")  # the best name only; all are in metrics.json
        rows.append(row)
    return atomic_write_csv(path, header, rows)


def _write_skipped(path: Path, skipped: list[tuple[str, str]]) -> Path:
    return atomic_write_csv(path, ["path", "reason"], [[p, r] for p, r in skipped])
