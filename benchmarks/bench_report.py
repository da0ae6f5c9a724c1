"""Time `write_report` on 10,000 images, to check a report takes seconds, not minutes.

Usage:  python benchmarks/bench_report.py [--n 10000] [--size 32] [--k 10 100] [--method tsne]

Images are random uint8 (S x S x 3), embeddings are k Gaussian blobs in 128-D, labels are
known, so every part of the page is built: thumbnails, confusion matrix, two 2-D maps.
Prints one line per k: wall and CPU seconds (CPU is the fairer figure on a shared machine),
page size in MB, thumbnails shown.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from deepclust.report import write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--k", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--method", default="auto", help="auto, tsne, umap or pca")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(args.n, args.size, args.size, 3), dtype=np.uint8)
    for k in args.k:
        labels_true = rng.integers(0, k, size=args.n)
        centres = rng.normal(0, 4, size=(k, 128))
        embeddings = (centres[labels_true] + rng.normal(size=(args.n, 128))).astype(np.float32)
        labels_pred = np.where(rng.random(args.n) < 0.8, labels_true, rng.integers(0, k, size=args.n))
        paths = [f"img/{i:05d}.png" for i in range(args.n)]
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu_start = time.perf_counter(), time.process_time()
            out = write_report(
                tmp, images=images, labels_pred=labels_pred, paths=paths, embeddings=embeddings,
                labels_true=labels_true, embedding_method=args.method,
            )
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            page = Path(out).read_text()
        print(
            f"n={args.n} S={args.size} k={k} method={args.method}: {seconds:.1f} s wall, {cpu:.1f} s CPU, "
            f"{len(page) / 1e6:.1f} MB, {page.count('<img') } images in page"
        )


if __name__ == "__main__":
    main()
