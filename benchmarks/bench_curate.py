"""Benchmark of `deepclust curate`: near-duplicate precision/recall and scale.

Three parts (each measurement runs in a fresh child process, so ``ru_maxrss`` is its own peak):

1. **Detector quality** on CIFAR-10 test (a folder of class sub-folders, default
   ``/tmp/cifar10/test``) with injected duplicates: ``--n-images`` originals (evenly over the
   classes), of which ``--n-dups`` get one copy each, the kinds taken in turn: byte-identical
   copy, JPEG re-encoded at quality 60, resized to 1.5x, cropped by 2 px per side, flipped
   left-right, colour-jittered (brightness x1.25, saturation x1.4). For each feature kind (raw,
   pca, and a trained run with ``--model RUN``) and each threshold of the sweep: pair precision
   (pairs inside a predicted group that are a true (original, copy) pair) and recall per kind
   (the copy lands in its original's group). The detector is `near_groups` over every image
   (no exact-hash step, so it is the embedding alone that is measured).
2. **Scale on images** (``--scale-images``, e.g. ``/tmp/cifar10`` = train + test, 60,000):
   decoding time, then wall time and peak RSS of a whole ``curate`` of the store per
   ``--scale-features`` (exact + near duplicates, and hierarchical sampling down to
   ``--scale-target`` images when given).
3. **Scale on synthetic embeddings** (``--synthetic N``): N random unit vectors (dim
   ``--dim``) with 1% injected near copies, near-duplicate groups with the exact index
   (IndexFlatIP) and with IVF; time, peak RSS and IVF's recall of the exact groups' pairs.

The lead's full run (one machine, nothing else running):

    python benchmarks/bench_curate.py --cifar /tmp/cifar10/test --n-images 10000 --n-dups 1200 \
        --model RUN_DIR --scale-images /tmp/cifar10 --scale-features raw pca --scale-target 30000 \
        --synthetic 1000000 --threads 2 --json bench_curate.json

(``--model`` is optional: a run trained at 32 px. The exact index on 1,000,000 vectors is
quadratic, about 1.3e14 multiply-adds at dim 128; add ``--no-exact`` to time IVF alone.)

Smoke run (seconds):

    python benchmarks/bench_curate.py --n-images 500 --n-dups 120 --synthetic 20000 --scale-images digits \
        --scale-features raw pca --scale-target 500
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

KINDS = ("copy", "jpeg", "resize", "crop", "flip", "jitter")
THRESHOLDS = (0.80, 0.85, 0.90, 0.93, 0.95, 0.97, 0.98, 0.99)


def _inject(src: Path, out: Path, n_images: int, n_dups: int, seed: int) -> list[tuple[str, str, str]]:
    """Copy ``n_images`` originals to ``out/orig`` and write copies to ``out/dup``; (orig, dup, kind)."""
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    rng = np.random.default_rng(seed)
    chosen = [files[i] for i in np.sort(rng.choice(len(files), size=min(n_images, len(files)), replace=False))]
    (out / "orig").mkdir(parents=True)
    (out / "dup").mkdir()
    originals = []
    for i, p in enumerate(chosen):
        target = out / "orig" / f"{i:06d}{p.suffix}"
        shutil.copyfile(p, target)
        originals.append(target)
    truth = []
    for j, i in enumerate(rng.choice(len(originals), size=min(n_dups, len(originals)), replace=False)):
        kind = KINDS[j % len(KINDS)]
        orig = originals[int(i)]
        dup = out / "dup" / f"{kind}_{int(i):06d}{'.jpg' if kind == 'copy' else '.png'}"
        if kind == "copy":
            shutil.copyfile(orig, dup)
        else:
            img = Image.open(orig).convert("RGB")
            if kind == "jpeg":
                dup = dup.with_suffix(".jpg")
                img.save(dup, quality=60)
                truth.append((str(orig), str(dup), kind))
                continue
            w, h = img.size
            img = {"resize": lambda m: m.resize((w * 3 // 2, h * 3 // 2), Image.BICUBIC),
                   "crop": lambda m: m.crop((2, 2, w - 2, h - 2)),
                   "flip": ImageOps.mirror,
                   "jitter": lambda m: ImageEnhance.Color(ImageEnhance.Brightness(m).enhance(1.25)).enhance(1.4),
                   }[kind](img)
            img.save(dup)
        truth.append((str(orig), str(dup), kind))
    return truth


def _quality(args: argparse.Namespace) -> list[dict]:
    from deepclust.curate.api import _Embedder, _load
    from deepclust.curate.dedup import near_groups
    from deepclust.data.store import load_images

    work = Path(tempfile.mkdtemp(prefix="bench_curate_"))
    try:
        truth = _inject(Path(args.cifar), work / "data", args.n_images, args.n_dups, args.seed)
        store = load_images(work / "data", size=32, progress=False)
        pos = {p: i for i, p in enumerate(store.paths)}
        pairs = {(pos[a], pos[b], kind) for a, b, kind in truth}
        rows = []
        for spec in ["raw", "pca"] + ([args.model] if args.model else []):
            loaded = _load(None if spec in ("raw", "pca") else spec, spec if spec in ("raw", "pca") else None,
                           "cpu", store.size)
            start = time.perf_counter()
            x = _Embedder(loaded, 256, False)(store)
            embed_s = time.perf_counter() - start
            for t in THRESHOLDS:
                groups, _ = near_groups(x, store.paths, t, progress=False)
                group_of = {m: g for g, grp in enumerate(groups) for m in grp.members}
                predicted = sum(len(g.members) * (len(g.members) - 1) // 2 for g in groups)
                found = [(a, b, k) for a, b, k in pairs if a in group_of and group_of[a] == group_of.get(b)]
                recall = {k: sum(f[2] == k for f in found) / max(1, sum(p[2] == k for p in pairs)) for k in KINDS}
                precision = len(found) / predicted if predicted else 1.0
                rows.append({"features": spec, "threshold": t, "precision": precision,
                             "recall": len(found) / max(1, len(pairs)), **{f"recall_{k}": r for k, r in recall.items()},
                             "groups": len(groups), "embed_s": round(embed_s, 2)})
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _scale_images(source: str, features: str, target: int) -> dict:
    """A whole curate of ``source`` (decode once, embed, exact + near duplicates, optional sampling)."""
    from deepclust.curate import curate
    from deepclust.data.store import load_images

    start = time.perf_counter()
    store = load_images(source, progress=False)  # decoding is timed apart (cached on a second run)
    decode_s = time.perf_counter() - start
    out = tempfile.mkdtemp(prefix="bench_curate_out_")
    start = time.perf_counter()
    result = curate(store, out_dir=out, features=features, device="cpu", report=False, progress=False,
                    target_size=target or None)
    shutil.rmtree(out, ignore_errors=True)
    return {"n_images": len(result.paths), "features": features, "target_size": target or None,
            "decode_s": round(decode_s, 2), "curate_s": round(time.perf_counter() - start, 2),
            "clusters_per_level": result.summary["clusters_per_level"],
            "index": result.summary["index"]["near_duplicates"], "near_groups": result.summary["near_groups"],
            "exact_groups": result.summary["exact_groups"]}


def _synthetic(n: int, dim: int, exact: bool, seed: int) -> dict:
    from deepclust.cluster import l2_normalize
    from deepclust.curate.dedup import near_groups

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    dups = rng.choice(n, size=n // 100, replace=False)
    x[dups[: len(dups) // 2]] = x[dups[len(dups) // 2:]] + 0.1 * rng.standard_normal((len(dups) // 2, dim),
                                                                                     dtype=np.float32)
    x = l2_normalize(x)
    paths = [f"{i:08d}" for i in range(n)]
    start = time.perf_counter()
    groups, index = near_groups(x, paths, 0.95, exact_limit=n if exact else 0, progress=False)
    return {"n": n, "dim": dim, "index": index, "seconds": round(time.perf_counter() - start, 2),
            "pairs_found": sum(len(g.members) - 1 for g in groups), "pairs_injected": len(dups) // 2}


def _child(task: dict) -> dict:
    """Run one measurement in a fresh process; add its peak RSS."""
    cmd = [sys.executable, __file__, "--_task", json.dumps(task)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    return json.loads(out)


def _run_task(task: dict) -> None:
    import faiss
    import torch

    threads = int(task.pop("threads"))
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    kind = task.pop("kind")
    result = {"quality": lambda: {"rows": _quality(argparse.Namespace(**task))},
              "images": lambda: _scale_images(task["source"], task["features"], task["target"]),
              "synthetic": lambda: _synthetic(task["n"], task["dim"], task["exact"], task["seed"])}[kind]()
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cifar", default="/tmp/cifar10/test", help="CIFAR-10 test folder (class sub-folders)")
    p.add_argument("--n-images", type=int, default=500)
    p.add_argument("--n-dups", type=int, default=120)
    p.add_argument("--model", default=None, help="a trained run directory (optional third encoder)")
    p.add_argument("--scale-images", default=None, help="a source to time a whole curate on (e.g. /tmp/cifar10)")
    p.add_argument("--scale-features", nargs="+", default=["raw"], choices=["raw", "pca"])
    p.add_argument("--scale-target", type=int, default=0,
                   help="also sample the scale run down to this many images (0: dedup only)")
    p.add_argument("--synthetic", type=int, default=0, help="number of synthetic embeddings (0: skip)")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--no-exact", action="store_true",
                   help="synthetic: IVF only (the exact index is quadratic: 1M x 1M inner products)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--_task", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._task:
        _run_task(json.loads(args._task))
        return
    common = {"threads": args.threads, "seed": args.seed}
    results: dict = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                     "machine": f"{platform.node()} {platform.processor() or platform.machine()} "
                                f"{os.cpu_count()} CPUs", "loadavg": os.getloadavg(), "threads": args.threads}
    results["quality"] = _child({"kind": "quality", "cifar": args.cifar, "n_images": args.n_images,
                                 "n_dups": args.n_dups, "model": args.model, **common})
    if args.scale_images:
        results["images"] = [_child({"kind": "images", "source": args.scale_images, "features": f,
                                     "target": args.scale_target, **common}) for f in args.scale_features]
    if args.synthetic:
        results["synthetic"] = [_child({"kind": "synthetic", "n": args.synthetic, "dim": args.dim, "exact": e,
                                        **common}) for e in ((False,) if args.no_exact else (True, False))]
    _print(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


def _print(results: dict) -> None:
    print(f"# bench_curate  {results['date']}  {results['machine']}  load {results['loadavg']}\n")
    print("| features | threshold | precision | recall | " + " | ".join(KINDS) + " | groups |")
    print("|---" * (5 + len(KINDS)) + "|")
    for r in results["quality"]["rows"]:
        print(f"| {r['features']} | {r['threshold']:.2f} | {r['precision']:.3f} | {r['recall']:.3f} | "
              + " | ".join(f"{r['recall_' + k]:.2f}" for k in KINDS) + f" | {r['groups']} |")
    print(f"\nquality run peak RSS {results['quality']['peak_rss_mb']} MB")
    for r in results.get("images", []):
        print(f"\nimages: {json.dumps(r)}")
    for r in results.get("synthetic", []):
        print(f"\nsynthetic: {json.dumps(r)}")


if __name__ == "__main__":
    main()
