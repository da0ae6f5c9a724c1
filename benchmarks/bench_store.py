"""Decode throughput of the image store on a folder of JPEGs (cold build and cached reload).

Usage:
    python benchmarks/bench_store.py --root /tmp/cifar10 --splits test train --workers 1 2

For each split and worker count the store is built in a fresh cache directory (cold: scan,
probe sizes, decode, write the memmap, atomic rename), then loaded again (cached: scan +
stat of every file to check for changes, then open the memmap; nothing is decoded).
Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from deepclust.data.store import load_images


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="/tmp/cifar10", help="folder with one sub-folder per split")
    parser.add_argument("--splits", nargs="+", default=["test", "train"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--size", type=int, default=None, help="working size (default: automatic)")
    args = parser.parse_args()

    print(f"machine: {platform.machine()} {platform.processor() or ''}, python {platform.python_version()}")
    print("| split | images | workers | cold build (s) | cold img/s | cached load (s) | cached img/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for split in args.splits:
        folder = Path(args.root) / split
        for workers in args.workers:
            cache = Path(tempfile.mkdtemp(prefix="bench_store_"))
            try:
                store, cold = _timed(lambda: load_images(folder, size=args.size, cache_dir=cache,
                                                         progress=False, workers=workers))
                again, cached = _timed(lambda: load_images(folder, size=args.size, cache_dir=cache,
                                                           progress=False, workers=workers))
                assert again.source_id == store.source_id
                checksum = int(np.asarray(again.images[::997], dtype=np.int64).sum())  # touch the data
                n = len(store)
                print(f"| {split} | {n} | {workers} | {cold:.2f} | {n / cold:,.0f} | {cached:.2f} | "
                      f"{n / cached:,.0f} |  <!-- S={store.size} skipped={len(store.skipped)} sum={checksum} -->")
            finally:
                shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
