"""``deepclust demo``: the whole job on built-in data (scikit-learn's 8x8 digits), end to end.

Clusters the digits twice -- with the demo's main features and with raw pixels, the
baseline every method must beat -- prints ACC/NMI/ARI side by side and writes the report
of the main run. Needs no download and runs in well under a minute on a laptop CPU.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DESCRIPTION = """\
Run deepclust end to end on built-in data (scikit-learn's 1797 handwritten
digits, 10 classes): cluster them with PCA features and with raw pixels,
print ACC/NMI/ARI of both side by side, and write an HTML report.
Takes under a minute on a laptop CPU (most of it drawing the report's map)."""

EPILOG = """\
Example:
  deepclust demo
  deepclust demo --out runs/demo && open runs/demo/pca/report.html
  deepclust demo --n-images 500      # a random subset: faster"""

DEMO_SOURCE = "digits"
DEMO_K = 10
#: 8x8 digits have 64 pixels; whitening more components than ~10 amplifies pixel noise.
DEMO_PCA_DIM = 10


@dataclass
class DemoRun:
    name: str            # sub-folder of out_dir and row label
    description: str     # what the row means, for the table
    metrics: dict        # acc, nmi, ari, ... (digits always have labels)
    seconds: float       # features + k-means (the report is not counted)
    out_dir: Path


@dataclass
class DemoResult:
    runs: list[DemoRun]  # the main run first, the raw-pixel baseline last
    report: Path         # report.html of the main run
    n_images: int
    table: str           # the side-by-side text printed by the command


def run_demo(out_dir: str | Path, train: bool = False, *, n_images: int | None = None,
             progress: bool = True) -> DemoResult:
    """Cluster the digits with the main features and with raw pixels into `out_dir/<name>/`.

    `train=True` is reserved for "train the default method briefly, then cluster"; the
    pixel-PCA run is the main run until training is wired in. `n_images` clusters a fixed
    random subset (same code path, used by the test suite to stay fast); None = all 1797.
    """
    from deepclust.data.store import load_images
    from deepclust.errors import DeepclustError
    from deepclust.pipeline import cluster_store

    if train:
        raise DeepclustError("the training demo is not available in this version; run `deepclust demo`.")
    out = Path(out_dir)
    store = load_images(DEMO_SOURCE, progress=progress)
    if n_images is not None:
        store = _subset(store, n_images, seed=0)

    # (name, description, cluster_store keyword arguments); the first entry is the main run.
    plans = [
        ("pca", f"PCA-{DEMO_PCA_DIM} (whitened) + k-means", dict(features="pca", pca_dim=DEMO_PCA_DIM, report=True)),
        ("raw", "raw pixels + k-means (baseline)", dict(features="raw", report=False)),
    ]
    runs = []
    for name, description, kwargs in plans:
        result = cluster_store(store, k=DEMO_K, out_dir=out / name, progress=progress,
                               title=f"deepclust demo: digits, {description}", **kwargs)
        seconds = result.info["seconds_features"] + result.info["seconds_kmeans"]
        runs.append(DemoRun(name, description, result.metrics, seconds, result.out_dir))
    report = runs[0].out_dir / "report.html"
    table = format_table(runs, len(store.paths))
    return DemoResult(runs=runs, report=report, n_images=len(store.paths), table=table)


def format_table(runs: list[DemoRun], n_images: int) -> str:
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
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    result = run_demo(args.out, n_images=args.n_images, progress=not args.quiet)
    print(result.table, end="")
    print(f"report: {result.report}")
    return 0
