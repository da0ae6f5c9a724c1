"""Plots for reports and runs, each returned as PNG bytes (and optionally written to a file).

All figures are drawn with matplotlib's object API on an Agg canvas rather than pyplot:
no global backend switch, no figure registry to leak, safe on headless machines.

Public functions:

- `project_2d` — 2-D map of embeddings (UMAP if installed, else t-SNE; or PCA), subsampled.
- `plot_embedding_2d` — scatter of that map coloured by labels.
- `plot_confusion` — true class x cluster count matrix.
- `plot_cluster_sizes` — bar chart of cluster sizes.
- `plot_training_curves` — one panel per numeric column of a training ``log.csv``.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from matplotlib import colormaps, rc_context
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepclust.errors import DataError

_T = TypeVar("_T")

EMBEDDING_METHODS = ("auto", "umap", "tsne", "pca")
#: Fonts with CJK glyphs, tried after matplotlib's DejaVu Sans (which has none) when installed.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK KR", "Noto Sans CJK TC", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "IPAGothic")
_FIRST_CJK = 0x2E80


@functools.cache
def cjk_fonts() -> tuple[str, ...]:
    """The `CJK_FONTS` installed here (matplotlib's font list), in preference order."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return tuple(name for name in CJK_FONTS if name in installed)


def plot_text(text: object) -> str:
    """A label as the plots draw it: undecodable bytes of a file name as U+FFFD, and -- when no
    CJK font is installed -- CJK (and later) characters as ``U+732B`` instead of empty boxes."""
    s = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    if cjk_fonts() or all(ord(c) < _FIRST_CJK or c == "\ufffd" for c in s):
        return s
    return "".join(c if ord(c) < _FIRST_CJK or c == "\ufffd" else f"U+{ord(c):04X}" for c in s)


def _with_fonts(fn: Callable[..., _T]) -> Callable[..., _T]:
    """Draw with DejaVu Sans first and the installed CJK fonts as fallbacks (matplotlib >= 3.6)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> _T:
        with rc_context({"font.family": ["DejaVu Sans", *cjk_fonts()]}):
            return fn(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _finish(fig: Figure, path: str | Path | None) -> bytes:
    """Render ``fig`` to PNG bytes; also write them to ``path`` when given."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    png = buffer.getvalue()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(png)
    return png


def label_colors(n: int) -> np.ndarray:
    """``(n, 4)`` RGBA colours that stay distinguishable for small ``n``."""
    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    # Many labels: spread over a perceptual colour map; interleave so neighbouring ids
    # (often similar clusters) get distant colours.
    positions = (np.arange(n) * 0.618033988749895) % 1.0
    return colormaps["turbo"](0.05 + 0.9 * positions)


# ---------------------------------------------------------------------------- 2-D map


def resolve_embedding_method(method: str) -> str:
    """``auto`` becomes ``umap`` when umap-learn is installed, else ``tsne``."""
    if method not in EMBEDDING_METHODS:
        raise ValueError(f"embedding_method must be one of {EMBEDDING_METHODS}, got {method!r}")
    if method == "auto":
        return "umap" if importlib.util.find_spec("umap") is not None else "tsne"
    return method


def project_2d(
    embeddings: np.ndarray,
    *,
    method: str = "auto",
    max_points: int = 2000,
    seed: int = 0,
    tsne_iters: int = 500,
    n_threads: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Project embeddings to 2-D for display.

    At most ``max_points`` rows are used (a seeded random subset, kept in index order):
    t-SNE cost grows faster than linearly and a scatter of more points shows no more.
    High-dimensional inputs are first reduced to 50 dimensions with PCA, the usual
    preprocessing that removes noise and speeds up t-SNE/UMAP.

    Args:
        embeddings: ``(N, D)`` float features.
        method: ``auto``, ``umap``, ``tsne`` or ``pca``.
        max_points: subsample size.
        seed: seed for the subsample and the projection.
        tsne_iters: t-SNE optimisation steps (250 of them early exaggeration); 500 gives a
            settled map for display at half the cost of scikit-learn's default 1000.
        n_threads: threads for t-SNE (see the comment at the call for why 1 by default).

    Duplicate rows (identical images) are drawn once: only the first of each is kept.

    Returns:
        ``coords`` ``(M, 2)`` float32 and ``index`` ``(M,)`` int64 rows of ``embeddings`` used.

    Raises:
        DegenerateMapError: fewer than `MIN_DISTINCT_POINTS` distinct rows.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"embeddings must be a non-empty (N, D) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise DataError("embeddings contain NaN or infinite values; check the feature extraction")
    method = resolve_embedding_method(method)
    rng = np.random.default_rng(seed)
    index = np.arange(x.shape[0])
    if x.shape[0] > max_points:
        index = np.sort(rng.choice(x.shape[0], size=max_points, replace=False))
    x, index = _distinct_rows(x[index], index)
    n, dim = x.shape
    if n < MIN_DISTINCT_POINTS:
        raise DegenerateMapError(f"only {n} distinct embedding(s): no 2-D map is drawn")

    from sklearn.decomposition import PCA

    if method == "pca" or dim <= 2:
        n_comp = min(2, dim, n)
        coords = PCA(n_components=n_comp, random_state=seed).fit_transform(x)
        if n_comp < 2:
            coords = np.concatenate([coords, np.zeros((n, 2 - n_comp))], axis=1)
        return coords.astype(np.float32), index.astype(np.int64)
    if dim > 50:
        x = PCA(n_components=min(50, n), random_state=seed).fit_transform(x).astype(np.float32)
    if method == "umap":
        import umap  # optional dependency

        reducer = umap.UMAP(n_components=2, n_neighbors=min(15, n - 1), random_state=seed)
        coords = reducer.fit_transform(x)
    else:
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3.0)))
        tsne = TSNE(
            n_components=2, perplexity=perplexity, init="pca", learning_rate="auto",
            max_iter=tsne_iters, random_state=seed, n_jobs=n_threads,
        )
        # The Barnes-Hut gradient is OpenMP code; on a busy machine (a report made beside a
        # training run) spinning OpenMP threads made it 5-6x slower than one thread
        # (measured: 2000 points, 102 s with 2 threads vs 16 s with 1 on a loaded 2-core box).
        with threadpool_limits(limits=n_threads):
            coords = tsne.fit_transform(x)
    return np.asarray(coords, dtype=np.float32), index.astype(np.int64)


MIN_DISTINCT_POINTS = 3


class DegenerateMapError(DataError):
    """Fewer than `MIN_DISTINCT_POINTS` distinct embeddings: a map would show nothing (and
    t-SNE's native code crashes on all-identical points); the report says so instead."""


def _distinct_rows(x: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first of each group of (numerically) identical rows, in index order: duplicate
    images would sit on one spot anyway, and t-SNE/UMAP misbehave on exact duplicates."""
    scale = float(np.abs(x).max()) or 1.0
    keys = np.round(x / scale, 6)
    _, first = np.unique(keys, axis=0, return_index=True)
    first = np.sort(first)
    return x[first], index[first]


@_with_fonts
def plot_embedding_2d(
    embeddings: np.ndarray,
    labels: np.ndarray,
    path: str | Path | None = None,
    *,
    method: str = "auto",
    max_points: int = 2000,
    seed: int = 0,
    title: str | None = None,
    label_names: Sequence[str] | None = None,
) -> bytes:
    """Scatter plot of a 2-D map of ``embeddings`` coloured by ``labels``; PNG bytes.

    ``embeddings`` with exactly two columns are plotted as they are (no projection, no
    subsampling), so a map computed once with `project_2d` can be drawn several times.
    ``label_names[label]`` names the legend entries when given; a legend is drawn for at
    most 20 distinct labels. Labels ``< 0`` (unknown) are drawn in light grey.
    """
    embeddings = np.asarray(embeddings)
    labels = np.asarray(labels).astype(np.int64)
    if embeddings.ndim != 2 or labels.shape != (embeddings.shape[0],):
        raise DataError(
            f"need (N, D) embeddings and (N,) labels, got {embeddings.shape} and {labels.shape}"
        )
    if embeddings.shape[1] == 2:
        coords = embeddings.astype(np.float32)
    else:
        coords, index = project_2d(embeddings, method=method, max_points=max_points, seed=seed)
        labels = labels[index]
    fig = _figure(6.4, 5.6)
    ax = fig.add_subplot()
    unknown = labels < 0
    if unknown.any():
        ax.scatter(coords[unknown, 0], coords[unknown, 1], s=6, c="#cccccc", linewidths=0, label="unknown")
    distinct = np.unique(labels[~unknown])
    colors = label_colors(distinct.size)
    size = 10 if coords.shape[0] <= 3000 else 5
    for color, label in zip(colors, distinct):
        mask = labels == label
        name = plot_text(label_names[label]) if label_names is not None and label < len(label_names) else str(label)
        ax.scatter(coords[mask, 0], coords[mask, 1], s=size, color=color, linewidths=0, label=name)
    if 0 < distinct.size <= 20:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, markerscale=2, frameon=False)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    return _finish(fig, path)


# ---------------------------------------------------------------------------- matrices and bars


@_with_fonts
def plot_confusion(
    cm: np.ndarray,
    row_names: Sequence[str],
    col_names: Sequence[str],
    path: str | Path | None = None,
    *,
    title: str = "true class x cluster",
) -> bytes:
    """Heat map of a count matrix (rows: true classes, columns: clusters); PNG bytes.

    Colour is the share of each row (so small and large classes read alike); the raw count
    is written in each cell when the matrix is small enough to read.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape != (len(row_names), len(col_names)):
        raise DataError(
            f"confusion matrix of shape {cm.shape} does not match {len(row_names)} row and "
            f"{len(col_names)} column names"
        )
    n_rows, n_cols = cm.shape
    row_share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    width = min(18.0, 2.5 + 0.45 * n_cols)
    height = min(18.0, 1.8 + 0.4 * n_rows)
    fig = _figure(width, height)
    ax = fig.add_subplot()
    image = ax.imshow(row_share, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of class", shrink=0.8)
    if n_cols <= 40:
        ax.set_xticks(range(n_cols), [plot_text(c) for c in col_names], rotation=90 if n_cols > 12 else 0, fontsize=8)
    if n_rows <= 40:
        ax.set_yticks(range(n_rows), [plot_text(r) for r in row_names], fontsize=8)
    if n_rows <= 25 and n_cols <= 25:
        for r in range(n_rows):
            for c in range(n_cols):
                if cm[r, c]:
                    color = "white" if row_share[r, c] > 0.6 else "black"
                    ax.text(c, r, str(int(cm[r, c])), ha="center", va="center", fontsize=7, color=color)
    ax.set_xlabel("cluster")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return _finish(fig, path)


@_with_fonts
def plot_cluster_sizes(
    sizes: Sequence[int],
    cluster_names: Sequence[str] | None = None,
    path: str | Path | None = None,
    *,
    title: str = "cluster sizes",
) -> bytes:
    """Bar chart of cluster sizes in the order given; PNG bytes.

    A dashed line marks the size every cluster would have if they were balanced.
    """
    counts = np.asarray(sizes, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0:
        raise DataError("plot_cluster_sizes needs a non-empty list of sizes")
    names = [str(n) for n in cluster_names] if cluster_names is not None else [str(i) for i in range(counts.size)]
    if len(names) != counts.size:
        raise DataError(f"{counts.size} sizes but {len(names)} cluster names")
    fig = _figure(min(16.0, 3.0 + 0.3 * counts.size), 3.2)
    ax = fig.add_subplot()
    ax.bar(np.arange(counts.size), counts, color=colormaps["tab10"](0))
    ax.axhline(counts.mean(), color="0.4", linestyle="--", linewidth=1, label="balanced")
    if counts.size <= 40:
        ax.set_xticks(np.arange(counts.size), names, rotation=90 if counts.size > 12 else 0, fontsize=8)
    ax.set_xlabel("cluster")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    return _finish(fig, path)


# ---------------------------------------------------------------------------- training log

_X_COLUMNS = ("step", "epoch")


def read_log_csv(log_csv: str | Path) -> dict[str, np.ndarray]:
    """Numeric columns of a training ``log.csv`` as float arrays (empty cells become NaN).

    Columns with no numeric value at all (e.g. a text note) are dropped.
    """
    path = Path(log_csv)
    if not path.is_file():
        raise DataError(f"training log {path} does not exist; pass the log.csv of a run directory")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"training log {path} has no rows yet; plot it after at least one logged step")
    columns: dict[str, np.ndarray] = {}
    for name in rows[0].keys():
        if name is None:
            continue
        values = []
        for row in rows:
            try:
                values.append(float(row.get(name) or "nan"))
            except ValueError:
                values.append(math.nan)
        array = np.asarray(values, dtype=np.float64)
        if np.isfinite(array).any():
            columns[name.strip()] = array
    return columns


@_with_fonts
def plot_training_curves(log_csv: str | Path, out_png: str | Path) -> Path:
    """Plot every numeric column of ``log_csv`` against step (or epoch) into ``out_png``.

    The x axis is ``step`` when present, else ``epoch``, else the row number. Each other
    numeric column (loss, lr, knn_acc, nmi_vs_prev, n_clusters_used, entropy, emb_std, ...)
    gets its own panel, so quantities on very different scales stay readable; a
    column that is logged only now and then (e.g. once per epoch) is drawn through its
    logged points only.
    """
    columns = read_log_csv(log_csv)
    x_name = next((c for c in _X_COLUMNS if c in columns), None)
    n_rows = len(next(iter(columns.values())))
    x = columns[x_name] if x_name else np.arange(n_rows, dtype=np.float64)
    series = [name for name in columns if name not in _X_COLUMNS]
    if not series:
        raise DataError(f"training log {log_csv} has no numeric column besides step/epoch to plot")
    n_cols = min(3, len(series))
    n_panel_rows = math.ceil(len(series) / n_cols)
    fig = _figure(4.2 * n_cols, 3.0 * n_panel_rows)
    for i, name in enumerate(series):
        ax = fig.add_subplot(n_panel_rows, n_cols, i + 1)
        y = columns[name]
        ok = np.isfinite(y) & np.isfinite(x)
        ax.plot(x[ok], y[ok], marker="o" if ok.sum() <= 30 else None, markersize=3, linewidth=1.2)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(x_name or "row", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
    out_png = Path(out_png)
    _finish(fig, out_png)
    return out_png
