"""Raw-pixel k-means on the CIFAR-10 test set through the real CLI, checked against scikit-learn.

Runs ``deepclust cluster /tmp/cifar10/test --k 10 --features raw --out OUT`` as a
subprocess (the entry point a user runs), then recomputes NMI/ARI with scikit-learn from
``assignments.csv`` (true class = the ``label`` column) and checks them against
``metrics.json``. Reference: scikit-learn ``KMeans(n_clusters=10, n_init=10, random_state=0)``
on the same pixels gives ACC 0.205, NMI 0.084, ARI 0.043 (``--sklearn-reference`` recomputes it).

Usage:
    python benchmarks/bench_cifar_raw.py [--out /tmp/bench_cifar_raw] [--no-report] [--sklearn-reference]

The data: /work/shared/data/cifar10-jpg.tar.gz unpacked to /tmp/cifar10/{train,test}/<class>/*.jpg
(done here when missing).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

ARCHIVE = Path("/work/shared/data/cifar10-jpg.tar.gz")
DATA_ROOT = Path("/tmp/cifar10")
REFERENCE = {"acc": 0.205, "nmi": 0.084, "ari": 0.043}


def ensure_data() -> Path:
    test_dir = DATA_ROOT / "test"
    if not test_dir.is_dir():
        print(f"unpacking {ARCHIVE} to {DATA_ROOT} ...", flush=True)
        DATA_ROOT.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(DATA_ROOT, filter="data")
    return test_dir


def check_against_sklearn(out: Path) -> dict:
    """NMI/ARI recomputed from assignments.csv; raises if metrics.json disagrees."""
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "assignments.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    y_true = [r["label"] for r in rows]
    y_pred = [r["cluster"] for r in rows]
    recomputed = {"nmi": normalized_mutual_info_score(y_true, y_pred), "ari": adjusted_rand_score(y_true, y_pred)}
    for key, value in recomputed.items():
        if abs(metrics[key] - value) > 1e-6:
            raise SystemExit(f"metrics.json {key}={metrics[key]:.6f} but scikit-learn gives {value:.6f}")
    if len(rows) != metrics["n_images"]:
        raise SystemExit(f"assignments.csv has {len(rows)} rows but metrics.json says {metrics['n_images']} images")
    return metrics


def sklearn_reference(test_dir: Path) -> dict:
    """scikit-learn KMeans(n_init=10, random_state=0) on the same decoded pixels."""
    import numpy as np
    from sklearn.cluster import KMeans

    from deepclust.data.store import load_images
    from deepclust.evaluate.metrics import clustering_metrics
    from deepclust.features import extract_features

    store = load_images(test_dir, progress=False)
    x = extract_features(store, "raw")
    labels = KMeans(n_clusters=10, n_init=10, random_state=0).fit_predict(x)
    return clustering_metrics(np.asarray(store.labels), labels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_cifar_raw"))
    parser.add_argument("--no-report", action="store_true", help="skip report.html (times clustering only)")
    parser.add_argument("--sklearn-reference", action="store_true", help="also run scikit-learn KMeans")
    args = parser.parse_args()

    test_dir = ensure_data()
    command = [sys.executable, "-m", "deepclust", "cluster", str(test_dir), "--k", "10", "--features", "raw",
               "--out", str(args.out), "--quiet"] + (["--no-report"] if args.no_report else [])
    print("$ deepclust " + " ".join(command[3:]), flush=True)
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stdout, done.stderr, sep="\n")
        return done.returncode
    metrics = check_against_sklearn(args.out)

    print(f"images {metrics['n_images']}  skipped {metrics['n_skipped']}  "
          f"wall {wall:.1f} s (features {metrics['seconds_features']:.1f} s, "
          f"k-means {metrics['seconds_kmeans']:.1f} s)")
    print(f"deepclust  ACC {metrics['acc']:.3f}  NMI {metrics['nmi']:.3f}  ARI {metrics['ari']:.3f}  "
          "(NMI/ARI agree with scikit-learn on assignments.csv)")
    print(f"reference  ACC {REFERENCE['acc']:.3f}  NMI {REFERENCE['nmi']:.3f}  ARI {REFERENCE['ari']:.3f}  "
          "(scikit-learn KMeans n_init=10 seed 0)")
    if args.sklearn_reference:
        t = time.perf_counter()
        ref = sklearn_reference(test_dir)
        print(f"sklearn    ACC {ref['acc']:.3f}  NMI {ref['nmi']:.3f}  ARI {ref['ari']:.3f}  "
              f"({time.perf_counter() - t:.1f} s, recomputed now)")
    ok = abs(metrics["acc"] - REFERENCE["acc"]) < 0.03 and abs(metrics["nmi"] - REFERENCE["nmi"]) < 0.02
    print("acceptance (ACC about 0.20, NMI about 0.08):", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
