"""What validating the image store costs (issue 12): the folder scan with the ctime-aware
fingerprint, the CRC-32 of images.npy checked on every open, a whole cached open, the cold
build it saves, and -- for comparison, not used -- a content hash of every source file.

    python benchmarks/bench_store_validation.py --data /tmp/cifar10/train     # 50,000 JPEGs
    python benchmarks/bench_store_validation.py --smoke                       # 40 tiny PNGs, seconds

Cold: a fresh $DEEPCLUST_CACHE, so the store is decoded and built (the OS page cache is not
dropped: the machine is shared). Cached: the same load_images again (scan + fingerprint +
index + CRC). Prints a Markdown table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deepclust.data.sources import scan_folder  # noqa: E402
from deepclust.data.store import images_checksum, load_images  # noqa: E402
from machine import machine_line  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def content_hash(paths: list[str]) -> str:
    crc = 0
    for p in paths:
        with open(p, "rb") as fh:
            crc = zlib.crc32(fh.read(), crc)
    return f"{crc:08x}"


def smoke_folder(root: Path) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(2):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
        for i in range(20):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"c{c}" / f"{i}.png")
    return root


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/cifar10/train")
    ap.add_argument("--size", type=int, default=None, help="working size (default: chosen from the data)")
    ap.add_argument("--repeats", type=int, default=3, help="cached opens timed (the median is reported)")
    ap.add_argument("--smoke", action="store_true", help="a generated folder of 40 tiny PNGs")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-store-"))
    data = smoke_folder(work / "images") if args.smoke else Path(args.data)
    os.environ["DEEPCLUST_CACHE"] = str(work / "cache")
    try:
        source, scan_s = timed(lambda: scan_folder(data))
        paths = [r.path for r in source.records]
        store, cold_s = timed(lambda: load_images(data, size=args.size, progress=False))
        crc_s = timed(lambda: images_checksum(store.directory / "images.npy"))[1]
        cached = sorted(timed(lambda: load_images(data, size=args.size, progress=False))[1]
                        for _ in range(args.repeats))
        content_s = timed(lambda: content_hash(paths))[1]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    nbytes = int(np.prod(store.images.shape))
    rows = {"files": len(paths), "store_MB": nbytes / 2**20, "scan_fingerprint_s": scan_s, "crc32_s": crc_s,
            "cached_open_s": cached[len(cached) // 2], "cold_build_s": cold_s, "content_hash_all_files_s": content_s}
    print(f"# store validation cost: {data}\n")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} | {machine_line()} | loadavg {os.getloadavg()}\n")
    print("| files | store MB | scan + fingerprint s | CRC-32 of store s | cached open s | cold build s | "
          "content hash of all files s (not used) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {len(paths)} | {rows['store_MB']:.1f} | {scan_s:.3f} | {crc_s:.3f} | {rows['cached_open_s']:.3f} | "
          f"{cold_s:.2f} | {content_s:.3f} |")
    print("\n" + json.dumps({"data": str(data), **rows, "loadavg": os.getloadavg()}))


if __name__ == "__main__":
    main()
