"""`write_report`: one self-contained ``report.html`` gallery of a clustering.

The page needs no other file and no network: thumbnails and plots are base64 PNG data URIs,
the style sheet is inline and there is no script. Every string that comes from the user
or the data (title, file names, class names, cluster names, captions, metric names,
skip reasons) goes through `html.escape` with ``quote=True``, so a file called
``<script>alert(1)</script>.png`` shows up as text, never as markup.

Page layout: summary (counts, metrics, collapsible skipped list) -> plots (cluster sizes,
confusion matrix, 2-D maps) -> table of contents -> one ``<section class="cluster">`` per
cluster, largest first, with size, purity, majority class, names, extras and thumbnails.
Each cluster section carries ``data-cluster``, ``data-size`` and (when known)
``data-purity`` attributes so tools and tests can read the numbers back.
"""

from __future__ import annotations

import html
import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from deepclust.core.io import atomic_write_bytes
from deepclust.errors import DataError
from deepclust.report import plots
from deepclust.report.stats import ClusterSummary, confusion_matrix, hungarian_column_order, summarize_clusters
from deepclust.report.thumbnails import ensure_png, pick_thumbnails, png_data_uri, thumbnail_data_uri

log = logging.getLogger(__name__)


def _utf8(text: str) -> bytes:
    """Valid UTF-8 for a browser: file names that are not UTF-8 (lone surrogates from
    ``surrogateescape``) are shown with U+FFFD for the undecodable bytes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace").encode("utf-8")

ClusterExtras = Mapping[int, Sequence[tuple[str, "bytes | np.ndarray"]]]

_CSS = """
:root { --fg:#1d2330; --muted:#5b6474; --line:#dde2ea; --bg:#f6f7f9; --card:#fff; --accent:#2f6fdb; }
* { box-sizing: border-box; }
body { margin:0; padding:24px 32px; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,
  "Noto Sans","Noto Sans CJK SC","Noto Sans CJK JP","Noto Sans CJK KR","Source Han Sans SC","PingFang SC",
  "Hiragino Sans","Microsoft YaHei","Meiryo","Malgun Gothic",sans-serif;
       color:var(--fg); background:var(--bg); }
h1 { margin:0 0 16px; font-size:24px; }
h2 { margin:0 0 8px; font-size:18px; }
section.card, section.cluster { background:var(--card); border:1px solid var(--line); border-radius:8px;
       padding:16px 20px; margin:0 0 18px; }
table { border-collapse:collapse; margin:4px 24px 8px 0; display:inline-table; vertical-align:top; }
th, td { text-align:left; padding:3px 10px; border-bottom:1px solid var(--line); }
th { color:var(--muted); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; }
details { margin-top:8px; } summary { cursor:pointer; color:var(--accent); }
details table { display:table; font-size:12px; }
.plots { display:grid; grid-template-columns:repeat(auto-fill, minmax(480px, 1fr)); gap:16px 24px; align-items:start; }
.plots figure { margin:0; } .plots figure.wide { grid-column:1 / -1; }
.plots img { max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:12px; margin-top:2px; }
nav.toc { margin:0 0 18px; line-height:2; }
nav.toc a { display:inline-block; margin:0 6px 0 0; padding:0 8px; border:1px solid var(--line); border-radius:12px;
       background:var(--card); color:var(--fg); text-decoration:none; font-size:12px; }
.cluster h2 .size { color:var(--muted); font-weight:normal; font-size:14px; margin-left:8px; }
.stats { color:var(--muted); margin:0 0 8px; }
.names { list-style:none; padding:0; margin:0 0 8px; display:flex; flex-wrap:wrap; gap:6px; }
.names li { background:#e8effc; border-radius:10px; padding:1px 9px; font-size:12px; }
.names .score { color:var(--muted); margin-left:4px; }
.extras { display:flex; flex-wrap:wrap; gap:10px; margin:0 0 8px; }
.extras figure { margin:0; }
.extras img { max-width:360px; height:auto; image-rendering:pixelated; border:1px solid var(--line); }
.thumbs { display:flex; flex-wrap:wrap; gap:4px; }
.thumbs img { width:64px; height:64px; object-fit:contain; image-rendering:pixelated; background:#000;
       border-radius:2px; }
.more { color:var(--muted); font-size:12px; margin:6px 0 0; }
"""


def _esc(value: Any) -> str:
    """Escape text for HTML content and (double- or single-quoted) attribute values."""
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4f}"
    return str(value)


def _score(value: Any) -> str:
    try:
        return f"{float(value):.2f}"
    except (TypeError, ValueError):
        return str(value)


def _validate(images, labels_pred, paths, embeddings, labels_true) -> tuple[np.ndarray, Any, Any]:
    labels_pred = np.asarray(labels_pred)
    if labels_pred.ndim != 1 or labels_pred.size == 0:
        raise DataError(f"labels_pred must be a non-empty (N,) array, got shape {labels_pred.shape}")
    if not np.issubdtype(labels_pred.dtype, np.integer):
        raise DataError(f"labels_pred must hold integer cluster ids, got dtype {labels_pred.dtype}")
    n = labels_pred.shape[0]
    if images.ndim not in (3, 4) or images.shape[0] != n:
        raise DataError(
            f"images must be an (N, S, S, 3) uint8 array with N={n} (one per label), got shape {images.shape}"
        )
    if len(paths) != n:
        raise DataError(f"got {len(paths)} paths for {n} images; pass one path (file name) per image")
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[0] != n:
            raise DataError(f"embeddings must be (N={n}, D), got shape {embeddings.shape}")
    if labels_true is not None:
        labels_true = np.asarray(labels_true)
        if labels_true.shape != (n,) or not np.issubdtype(labels_true.dtype, np.integer):
            raise DataError(
                f"labels_true must be an integer (N={n},) array (-1 for unknown), got shape {labels_true.shape}"
            )
    return labels_pred.astype(np.int64), embeddings, (None if labels_true is None else labels_true.astype(np.int64))


def _class_name(class_id: int | None, class_names: Sequence[str] | None) -> str:
    if class_id is None:
        return ""
    if class_names is not None and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return str(class_id)


def _png_width(png: bytes) -> int:
    """Pixel width from the PNG header (IHDR is always the first chunk)."""
    return int.from_bytes(png[16:20], "big")


def _figure(png: bytes, caption: str, element_id: str) -> str:
    # Plots wider than half the page (many clusters) get a row of their own, so their
    # labels are not shrunk to fit a half-width cell.
    wide = ' class="wide"' if _png_width(png) > 760 else ""
    return (
        f'<figure id="{element_id}"{wide}><img src="{png_data_uri(png)}" alt="{_esc(caption)}">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _summary_html(n_images, summaries, skipped, metrics) -> str:
    facts = [("images", n_images), ("clusters", len(summaries)), ("skipped", len(skipped))]
    parts = ['<section class="card" id="summary"><h2>Summary</h2><table class="facts">']
    parts += [f'<tr><th>{_esc(k)}</th><td class="num">{_esc(v)}</td></tr>' for k, v in facts]
    parts.append("</table>")
    if metrics:
        parts.append('<table class="metrics" id="metrics"><tr><th>metric</th><th>value</th></tr>')
        parts += [
            f'<tr><th>{_esc(k)}</th><td class="num">{_esc(_fmt(v))}</td></tr>' for k, v in metrics.items()
        ]
        parts.append("</table>")
    if skipped:
        parts.append(
            f'<details class="skipped" id="skipped"><summary>{len(skipped)} skipped file(s)</summary>'
            "<table><tr><th>file</th><th>reason</th></tr>"
        )
        parts += [f"<tr><td>{_esc(path)}</td><td>{_esc(reason)}</td></tr>" for path, reason in skipped]
        parts.append("</table></details>")
    parts.append("</section>")
    return "".join(parts)


def _plots_html(
    summaries, labels_pred, labels_true, class_names, embeddings, method, max_points, seed, training_log
) -> str:
    figures = [
        _figure(
            plots.plot_cluster_sizes([s.size for s in summaries], [str(s.cluster) for s in summaries]),
            "Cluster sizes (largest first)",
            "plot-sizes",
        )
    ]
    if labels_true is not None and (labels_true >= 0).any():
        cm, class_ids, cluster_ids = confusion_matrix(labels_true, labels_pred)
        order = hungarian_column_order(cm)
        figures.append(
            _figure(
                plots.plot_confusion(
                    cm[:, order],
                    [_class_name(int(c), class_names) for c in class_ids],
                    [str(int(c)) for c in cluster_ids[order]],
                ),
                "Confusion matrix: true class x cluster (columns in Hungarian-matched order)",
                "plot-confusion",
            )
        )
    if embeddings is not None:
        method = plots.resolve_embedding_method(method)
        try:
            log.info("2-D map of %d embeddings (%s)", len(embeddings), method)
            coords, index = plots.project_2d(embeddings, method=method, max_points=max_points, seed=seed)
        except plots.DegenerateMapError as exc:
            figures.append(f'<p class="note" id="plot-map-note">{html.escape(str(exc))}: the images are '
                           "(nearly) all identical.</p>")
            embeddings = None
    if embeddings is not None:
        shown = f"{index.size} of {labels_pred.size} points" if index.size < labels_pred.size else "all points"
        figures.append(
            _figure(
                plots.plot_embedding_2d(coords, labels_pred[index], title="coloured by cluster"),
                f"2-D map of the embeddings ({method}, {shown}), coloured by cluster",
                "plot-map-clusters",
            )
        )
        if labels_true is not None and (labels_true >= 0).any():
            figures.append(
                _figure(
                    plots.plot_embedding_2d(
                        coords, labels_true[index], title="coloured by true class", label_names=class_names
                    ),
                    f"2-D map of the embeddings ({method}, {shown}), coloured by true class",
                    "plot-map-classes",
                )
            )
    if training_log is not None:
        with tempfile.TemporaryDirectory() as tmp:
            curves = plots.plot_training_curves(training_log, Path(tmp) / "curves.png").read_bytes()
        figures.append(_figure(curves, "Training curves (log.csv)", "plot-training"))
    return '<section class="card plots" id="plots">' + "".join(figures) + "</section>"


def _cluster_html(
    summary: ClusterSummary,
    images: np.ndarray,
    paths: Sequence[str],
    embeddings: np.ndarray | None,
    class_names: Sequence[str] | None,
    names: Sequence[tuple[str, float]] | None,
    extras: Sequence[tuple[str, Any]] | None,
    n_thumbs: int,
    thumb_size: int,
) -> str:
    c = summary.cluster
    attrs = f'class="cluster" id="cluster-{c}" data-cluster="{c}" data-size="{summary.size}"'
    if summary.purity is not None:
        attrs += f' data-purity="{summary.purity:.6f}"'
    title = "Noise (in no cluster)" if c == -1 else f"Cluster {c}"  # HDBSCAN's noise label
    parts = [f"<section {attrs}><h2>{title}<span class=\"size\">{summary.size} images</span></h2>"]
    if summary.purity is not None:
        majority = _class_name(summary.majority_class, class_names)
        parts.append(
            f'<p class="stats">purity <b>{summary.purity:.1%}</b> · majority class '
            f'<b class="majority">{_esc(majority)}</b> · {summary.n_labelled} labelled</p>'
        )
    if names:
        parts.append('<ul class="names">')
        parts += [f'<li>{_esc(n)}<span class="score">{_esc(_score(s))}</span></li>' for n, s in names]
        parts.append("</ul>")
    if extras:
        parts.append('<div class="extras">')
        for caption, image in extras:
            parts.append(
                f'<figure><img src="{png_data_uri(ensure_png(image))}" alt="{_esc(caption)}" title="{_esc(caption)}">'
                f"<figcaption>{_esc(caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    chosen = pick_thumbnails(summary.members, embeddings, n_thumbs)
    parts.append('<div class="thumbs">')
    for i in chosen:
        path = str(paths[i])
        parts.append(
            f'<img src="{thumbnail_data_uri(images[i], thumb_size)}" alt="{_esc(os.path.basename(path) or path)}" '
            f'title="{_esc(path)}">'
        )
    parts.append("</div>")
    if chosen.size < summary.size:
        order = "closest to the cluster centre first" if embeddings is not None else "first members"
        parts.append(f'<p class="more">showing {chosen.size} of {summary.size} ({order})</p>')
    parts.append("</section>")
    return "".join(parts)


def write_report(
    out_dir: str | Path,
    *,
    images: np.ndarray,
    labels_pred: np.ndarray,
    paths: Sequence[str],
    embeddings: np.ndarray | None = None,
    labels_true: np.ndarray | None = None,
    class_names: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    cluster_names: Mapping[int, Sequence[tuple[str, float]]] | None = None,
    cluster_extras: ClusterExtras | None = None,
    title: str = "deepclust report",
    max_thumbs_per_cluster: int = 32,
    skipped: Sequence[tuple[str, str]] | None = None,
    max_total_thumbs: int = 5000,
    thumb_size: int = 64,
    embedding_method: str = "auto",
    max_map_points: int = 2000,
    seed: int = 0,
    progress: bool = False,
    training_log: str | Path | None = None,
) -> Path:
    """Write ``out_dir/report.html``, a self-contained gallery of a clustering; return its path.

    Args:
        out_dir: directory to write into (created if missing).
        images: ``(N, S, S, 3)`` uint8 images (a memmap is fine: only shown images are read).
        labels_pred: ``(N,)`` integer cluster ids.
        paths: ``N`` file names; shown as thumbnail title (full path) and alt (base name).
        embeddings: ``(N, D)`` features; enables the 2-D maps and centre-first thumbnails.
        labels_true: ``(N,)`` class ids, ``-1`` for unknown; enables purity and the confusion matrix.
        class_names: class id -> name.
        metrics: name -> value, e.g. the output of ``clustering_metrics``.
        cluster_names: cluster id -> ``[(name, score), ...]`` (e.g. zero-shot names).
        cluster_extras: cluster id -> ``[(caption, PNG bytes or uint8 image), ...]`` (e.g. attention maps).
        title: page title.
        max_thumbs_per_cluster: thumbnails per cluster at most.
        skipped: ``(path, reason)`` for inputs that could not be used.
        max_total_thumbs: cap over all clusters, so a run with 1000 clusters still makes a
            page a browser can open; the per-cluster count shrinks (to no fewer than 4).
        thumb_size: thumbnail side in pixels (small images are enlarged by nearest neighbour).
        embedding_method: ``auto`` (UMAP if installed, else t-SNE), ``umap``, ``tsne`` or ``pca``.
        max_map_points: points in the 2-D map at most (random subset, seeded).
        seed: seed of the map's subsample and projection.
        progress: show a progress bar while the cluster sections are built.
        training_log: a run's ``log.csv``; adds its training curves to the plots.
    """
    images = images if isinstance(images, np.ndarray) else np.asarray(images)
    labels_pred, embeddings, labels_true = _validate(images, labels_pred, paths, embeddings, labels_true)
    if max_thumbs_per_cluster < 0:
        raise DataError(f"max_thumbs_per_cluster must be >= 0, got {max_thumbs_per_cluster}")
    skipped = list(skipped or [])
    summaries = summarize_clusters(labels_pred, labels_true)
    n_thumbs = min(max_thumbs_per_cluster, max(4, max_total_thumbs // max(1, len(summaries))))
    cluster_names = {int(k): v for k, v in (cluster_names or {}).items()}
    cluster_extras = {int(k): v for k, v in (cluster_extras or {}).items()}

    body = [f"<h1>{_esc(title)}</h1>", _summary_html(labels_pred.size, summaries, skipped, dict(metrics or {}))]
    body.append(
        _plots_html(
            summaries, labels_pred, labels_true, class_names, embeddings,
            embedding_method, max_map_points, seed, training_log,
        )
    )
    body.append('<nav class="toc" id="toc">clusters: ')
    body += [f'<a href="#cluster-{s.cluster}">{"noise" if s.cluster == -1 else s.cluster} ({s.size})</a>'
             for s in summaries]
    body.append("</nav>")
    for summary in tqdm(summaries, desc="report clusters", disable=not progress):
        body.append(
            _cluster_html(
                summary, images, paths, embeddings, class_names,
                cluster_names.get(summary.cluster), cluster_extras.get(summary.cluster), n_thumbs, thumb_size,
            )
        )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / "report.html"
    atomic_write_bytes(target, _utf8(page))  # temporary file + rename: never half a page
    return target
