"""``deepclust demo``: the whole job on built-in data (scikit-learn's 8x8 digits), end to end.

Trains the default self-supervised method briefly on the digits, clusters them with the
trained backbone, and prints ACC/NMI/ARI next to PCA and raw-pixel k-means -- the baselines
every method must beat -- then writes the report of the trained run. Needs no download and
runs in about a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DESCRIPTION = """\
Run deepclust end to end on built-in data (scikit-learn's 1797 handwritten
digits, 10 classes): train DeepCluster briefly (recipe digits_deepcluster),
cluster the digits with the trained features, print ACC/NMI/ARI next to
PCA and raw-pixel k-means, and write an HTML report of the trained run.
Takes about a minute on a laptop CPU. DIR/model holds the trained run
(replaced when the demo is run again into the same DIR)."""

EPILOG = """\
Example:
  deepclust demo
  deepclust demo --out runs/demo && open runs/demo/trained/report.html
  deepclust demo --n-images 500      # a random subset: faster
  deepclust demo --no-train          # the pixel baselines only"""

DEMO_SOURCE = "digits"
DEMO_K = 10
#: 8x8 digits have 64 pixels; whitening more components than ~10 amplifies pixel noise.
DEMO_PCA_DIM = 10
#: The method the demo trains: the recipe that clusters digits best in seconds on a CPU
#: (see BENCHMARKS.md, methods on digits).
DEMO_RECIPE = "digits_deepcluster"


@dataclass
class DemoRun:
    name: str            # sub-folder of out_dir and row label
    description: str     # what the row means, for the table
    metrics: dict[str, Any]  # acc, nmi, ari, ... (digits always have labels)
    seconds: float       # features + k-means (the report is not counted)
    out_dir: Path


@dataclass
class DemoResult:
    runs: list[DemoRun]  # the main run first (trained, or PCA), the raw-pixel baseline last
    report: Path         # report.html of the main run
    n_images: int
    table: str           # the side-by-side text printed by the command


def run_demo(out_dir: str | Path, train: bool = True, *, n_images: int | None = None,
             progress: bool = True) -> DemoResult:
    """Train (if `train`) and cluster the digits into `out_dir/<name>/`, next to baselines.

    With `train`, `DEMO_RECIPE` is trained into `out_dir/model` and its features clustered
    into `out_dir/trained` (the main run, with the report); PCA and raw-pixel k-means follow.
    Without, the PCA run is the main run. `n_images` uses a fixed random subset (same code
    path, used by the test suite to stay fast); None = all 1797.
    """
    from deepclust.data.store import load_images
    from deepclust.pipeline import cluster_store

    out = Path(out_dir)
    store = load_images(DEMO_SOURCE, progress=progress)
    if n_images is not None:
        store = _subset(store, n_images, seed=0)

    # (name, description, cluster_store keyword arguments); the first entry is the main run.
    plans: list[tuple[str, str, dict[str, Any]]] = [
        ("pca", f"PCA-{DEMO_PCA_DIM} (whitened) + k-means", dict(features="pca", pca_dim=DEMO_PCA_DIM)),
        ("raw", "raw pixels + k-means (baseline)", dict(features="raw")),
    ]
    if train:
        started = time.perf_counter()
        run_dir = _train_demo_model(store, out / "model", progress=progress)
        training_seconds = time.perf_counter() - started
        plans.insert(0, ("trained", f"{DEMO_RECIPE} (trained) + k-means", dict(model=str(run_dir))))
    for i, (_, _, kwargs) in enumerate(plans):
        kwargs["report"] = i == 0  # only the main run gets a report
    runs = []
    for name, description, kwargs in plans:
        result = cluster_store(store, k=DEMO_K, out_dir=out / name, progress=progress,
                               title=f"deepclust demo: digits, {description}", **kwargs)
        seconds = result.info["seconds_features"] + result.info["seconds_kmeans"]
        runs.append(DemoRun(name, description, result.metrics or {}, seconds, result.out_dir))
    report = runs[0].out_dir / "report.html"
    table = format_table(runs, len(store.paths))
    if train:
        table += f"training {DEMO_RECIPE}: {training_seconds:.1f} s (checkpoint in {out / 'model'})\n"
    return DemoResult(runs=runs, report=report, n_images=len(store.paths), table=table)


def _train_demo_model(store, run_dir: Path, *, progress: bool) -> Path:
    """Train `DEMO_RECIPE` on `store` into `run_dir`, replacing an earlier demo's run there."""
    import logging
    import shutil

    from deepclust.train.checkpoint import has_checkpoint_files
    from deepclust.train.config import TrainConfig
    from deepclust.train.loop import train

    if run_dir.is_dir() and has_checkpoint_files(run_dir):
        shutil.rmtree(run_dir)  # the demo's own earlier run; training refuses to overwrite one
    cfg = TrainConfig.load(DEMO_RECIPE, overrides={"data": DEMO_SOURCE, "k": DEMO_K})
    # The demo's summary is its table: no per-epoch lines (log.csv keeps every figure; -v shows them).
    train_log = logging.getLogger("deepclust.train")
    level = train_log.level
    if not train_log.isEnabledFor(logging.DEBUG):
        train_log.setLevel(logging.WARNING)
    try:
        return Path(train(cfg, store, run_dir, progress=progress))
    finally:
        train_log.setLevel(level)


def format_table(runs: list[DemoRun], n_images: int) -> str:
    """ACC/NMI/ARI per run; `seconds` is features + k-means (training is reported apart)."""
    width = max(len(r.description) for r in runs)
    lines = [f"digits: {n_images} images, k={DEMO_K}",
             f"{'method':<{width}}    ACC    NMI    ARI  seconds"]
    for r in runs:
        m = r.metrics
        lines.append(f"{r.description:<{width}}  {m['acc']:.3f}  {m['nmi']:.3f}  {m['ari']:.3f}  {r.seconds:7.1f}")
    return "\n".join(lines) + "\n"


def _subset(store, n: int, seed: int):
    """The same store restricted to a fixed random `n` images (kept in their original order)."""
    total = len(store.paths)
    if not 0 < n <= total:
        from deepclust.errors import DeepclustError

        raise DeepclustError(f"n_images must be between 1 and {total}, got {n}.")
    keep = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
    return dataclasses.replace(
        store,
        images=np.ascontiguousarray(store.images[keep]),
        paths=[store.paths[i] for i in keep],
        labels=None if store.labels is None else np.asarray(store.labels)[keep],
        # A new cache key: cached features of the full set must not be reused for the subset.
        source_id=f"{store.source_id}-subset{n}-seed{seed}",
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run deepclust end to end on built-in digits",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="output folder (default: runs/demo)")
    p.add_argument("--n-images", type=int, default=None, metavar="N",
                   help="use a fixed random subset of N digits (default: all 1797)")
    p.add_argument("--no-train", action="store_true",
                   help="skip training: only the PCA and raw-pixel k-means runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = run_demo(args.out, train=not args.no_train, n_images=args.n_images, progress=not args.quiet)
    print(result.table, end="")
    print(f"report: {result.report}")
    return 0
