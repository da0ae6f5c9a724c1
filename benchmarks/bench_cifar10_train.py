"""CIFAR-10 training benchmark under a wall-clock budget (issue 4: "best test ACC within 60 minutes").

Trains a recipe on the CIFAR-10 *train* split with `deepclust.train.loop.train`, stops when the
budget is spent, then evaluates the trained backbone on the *test* split:

* k-means (k=10) on L2-normalised test embeddings -> ACC / NMI / ARI,
* k-NN accuracy (k=20, cosine, train embeddings as the labelled bank -> test queries),
* the head's argmax on test when the method has a k-output head (DINO `out_dim: k`,
  SwAV `n_prototypes: k`).

The loop has no time-budget option, so the budget is enforced in two layers:

1. `--epochs auto` sizes the run from a measured pilot throughput (`--pilot-rate` images/s, or
   a short pilot on `--pilot-images` images run here first) so that the cosine schedules finish
   inside the budget;
2. a watchdog thread interrupts training (SIGINT, which the loop defers until its checkpoint is
   complete) if the budget is still exceeded; the last complete epoch checkpoint is evaluated.

Labels are used for evaluation only. Pilot mode (`--pilot-only`) trains one epoch on a subset of
the train split and reports images/s and the online k-NN accuracy (train-split 80/20 split), which
is how recipes are compared without touching the test labels.

Examples:
    python benchmarks/bench_cifar10_train.py --config configs/cifar10_cpu_dino.yaml --pilot-only \\
        --pilot-images 2560 --out /tmp/pilot-dino
    python benchmarks/bench_cifar10_train.py --config configs/cifar10_cpu_dino.yaml --minutes 57 \\
        --epochs auto --pilot-rate 180 --out runs/c10-dino --results /tmp/c10.json
"""

from __future__ import annotations

import _thread
import argparse
import csv
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from deepclust.data.store import load_images
from deepclust.evaluate.knn import knn_accuracy
from deepclust.evaluate.metrics import clustering_metrics
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from machine import best_peaks, machine_line, matmul_peaks


def subset_store(store, n: int, seed: int = 0):
    """A store-like view of `n` random images (class-balanced enough at n >= 1000)."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(store.images), n, replace=False))
    return SimpleNamespace(images=np.ascontiguousarray(store.images[idx]),
                           labels=None if store.labels is None else store.labels[idx])


def read_log(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "log.csv"
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def train_with_budget(cfg: TrainConfig, store, out: Path, minutes: float | None, progress: bool,
                      resume: bool = False) -> tuple[float, bool]:
    """Run `train`; a watchdog sends SIGINT when `minutes` have passed. Returns (seconds, interrupted)."""
    stop = threading.Event()

    def watchdog() -> None:
        if not stop.wait(minutes * 60.0):
            print(f"[bench] budget of {minutes} min spent: interrupting after the current epoch's checkpoint",
                  flush=True)
            _thread.interrupt_main(signal.SIGINT)

    if minutes:
        threading.Thread(target=watchdog, daemon=True).start()
    start = time.perf_counter()
    interrupted = False
    try:
        train(cfg, store, out, progress=progress, resume=resume)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
    return time.perf_counter() - start, interrupted


def evaluate_run(run_dir: Path, train_store, test_store, k: int) -> dict[str, float | None]:
    """Test-split clustering metrics, k-NN accuracy and head accuracy of a trained run: the
    run is loaded once and its test embeddings clustered by the one clustering function with
    the run's own settings (`cluster_whiten_dim`), as `deepclust cluster --model RUN` does."""
    from deepclust.cluster import cluster_embeddings
    from deepclust.features import embed_store, load_model

    loaded = load_model(str(run_dir), device="cpu")
    test = embed_store(loaded, test_store, batch_size=512, cache=False, progress=False)
    train_x = embed_store(loaded, train_store, batch_size=512, cache=False, progress=False).features
    clustering = cluster_embeddings(test.features, k, spherical=loaded.spherical, whiten_dim=loaded.whiten_dim,
                                    n_init=10, seed=0)
    result: dict[str, float | None] = {}
    m = clustering_metrics(test_store.labels, clustering.labels)
    result.update(acc=m["acc"], nmi=m["nmi"], ari=m["ari"])
    result["knn_acc"] = knn_accuracy(train_x, train_store.labels, test.features, test_store.labels, k=20)
    if test.logits is not None:
        hm = clustering_metrics(test_store.labels, test.logits.argmax(axis=1))
        result.update(head_acc=hm["acc"], head_nmi=hm["nmi"], head_ari=hm["ari"],
                      head_clusters_used=hm["n_clusters_used"])
    else:
        result.update(head_acc=None)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="recipe YAML (configs/cifar10_cpu_*.yaml)")
    p.add_argument("--train", default="/tmp/cifar10/train")
    p.add_argument("--test", default="/tmp/cifar10/test")
    p.add_argument("--out", required=True, help="run directory (must not hold a run)")
    p.add_argument("--minutes", type=float, default=None, help="training wall-clock budget")
    p.add_argument("--epochs", default=None, help="an int, or 'auto' (from --pilot-rate and --minutes)")
    p.add_argument("--pilot-rate", type=float, default=None, help="measured training images/s for --epochs auto")
    p.add_argument("--epoch-overhead-s", type=float, default=20.0,
                   help="per-epoch seconds outside the steps (online k-NN, checkpoint) for --epochs auto")
    p.add_argument("--pilot-only", action="store_true", help="train one epoch on --pilot-images and stop")
    p.add_argument("--pilot-images", type=int, default=2560)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last epoch checkpoint (--minutes: this segment's budget)")
    p.add_argument("--set", action="append", default=[], help="key=value override (as deepclust train --set)")
    p.add_argument("--results", default=None, help="write a JSON summary here")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    load1 = os.getloadavg()
    peaks_before = matmul_peaks()
    train_store = load_images(args.train, size=32, progress=False)
    cfg = TrainConfig.load(args.config, sets=args.set)
    store = train_store
    if args.pilot_only:
        store = subset_store(train_store, args.pilot_images)
        cfg = TrainConfig.load(args.config, sets=args.set + ["epochs=1", "warmup_epochs=0.2",
                                                              "eval_samples=2000", "monitor_samples=512"])
    elif args.epochs == "auto":
        if not (args.minutes and args.pilot_rate):
            p.error("--epochs auto needs --minutes and --pilot-rate")
        epoch_s = len(store.images) / args.pilot_rate + args.epoch_overhead_s
        n = max(1, int(args.minutes * 60 // epoch_s))
        print(f"[bench] {args.pilot_rate} img/s -> {epoch_s:.0f} s/epoch -> {n} epochs in {args.minutes} min",
              flush=True)
        cfg = TrainConfig.load(args.config, sets=args.set + [f"epochs={n}"])
    elif args.epochs:
        cfg = TrainConfig.load(args.config, sets=args.set + [f"epochs={int(args.epochs)}"])

    out = Path(args.out)
    seconds, interrupted = train_with_budget(cfg, store, out, None if args.pilot_only else args.minutes,
                                             progress=not args.no_progress, resume=args.resume)
    peaks = best_peaks(peaks_before, matmul_peaks())
    rows = read_log(out)
    rates = [float(r["images_per_s"]) for r in rows if r.get("images_per_s")]
    summary = dict(config=args.config, sets=args.set, epochs_planned=cfg.epochs, epochs_done=len(rows),
                   train_seconds=round(seconds, 1), interrupted=interrupted,
                   images_per_s=round(float(np.mean(rates)), 1) if rates else None,
                   online_knn=[r.get("knn_acc") for r in rows], loss=[r.get("loss") for r in rows],
                   load_avg_start=load1, load_avg_end=os.getloadavg(), machine=machine_line(peaks),
                   matmul_gflops={k: round(v / 1e9, 1) for k, v in peaks.items()})
    print("[bench] training:", json.dumps(summary), flush=True)
    if not args.pilot_only and rows:
        test_store = load_images(args.test, size=32, progress=False)
        t0 = time.perf_counter()
        summary["test"] = evaluate_run(out, train_store, test_store, k=cfg.k)
        summary["eval_seconds"] = round(time.perf_counter() - t0, 1)
        print("[bench] test:", json.dumps(summary["test"]), flush=True)
    if args.results:
        Path(args.results).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
