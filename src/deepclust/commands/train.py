"""``deepclust train``: self-supervised training of a clustering method on a source of images."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

DESCRIPTION = """\
Train a self-supervised clustering method (DeepCluster, SwAV, DINO) on the images of SOURCE,
then cluster them with the trained backbone. DIR receives:

  ckpt-<epoch>-<id>/ + latest   checkpoint of the last epoch, written as a whole (config.json,
                   model.safetensors, optimizer.safetensors, state.json; a kill loses nothing)
  log.csv          one row per epoch: loss, lr, images/s, collapse watch, online k-NN accuracy
  then the clustering of SOURCE with the trained encoder, exactly as
  `deepclust cluster SOURCE --model DIR --k K` writes it (same numbers, same keys):
  assignments.csv  path, cluster (k-means with K clusters on the trained features, or the
                   clustering head of --head / cluster_head: SCAN by default without a recipe)
  metrics.json     ACC/NMI/ARI, k-NN and cluster-head accuracy when the source has labels
  skipped.csv, summary.txt, report.html (with the training curves of log.csv)

Settings come from defaults <- the recipe (--config, a YAML path or a name in configs/)
<- the flags below <- --set key=value (any TrainConfig field; method_kwargs.NAME=value for a
method hyper-parameter). --lr is the base rate for a batch of 256 images: the run uses
lr x global batch / 256. --resume continues DIR exactly where its last epoch checkpoint
left off (its config.json is used unless you pass --config/--method); a larger --epochs
re-stretches every schedule over the new total (a warning says so). A custom method
(package.module:factory) is imported only with --trust-custom-code.

--init SPEC (hf:<id>, a Hugging Face DINOv2 / CLIP folder, or a run) starts the backbone of
student and teacher from SPEC's weights, with its architecture, patch size, image size and
mean/std; heads start fresh (a short head-only warm-up first for DINO / iBOT / DINOv2), at
0.1 x the learning rate with layer-wise decay 0.9 (--set init_lr_scale=, layer_decay=,
freeze_blocks=N, init_head_warmup_steps=; see docs/domain_adaptation.md).

Without --config, the settings come from the data and the machine (deepclust.train.defaults:
backbone width, views, image size, batch, lr, a SCAN head as the final clustering; the log lists
them, config.json records them; flags and --set still win) and, without --epochs, a 10-minute
budget sizes the run. --time DURATION (90s, 60m, 2h, 1h30m) measures the speed first, then
sizes epochs and steps so that every schedule (lr, weight decay, teacher momentum and
temperatures, warm-ups, freezes, DAC's thresholds) ends with the budget; the plan is logged
and kept for --resume.

Several GPUs or processes: torchrun --nproc_per_node=2 -m deepclust train ... (DDP)."""

EPILOG = """\
Example:
  deepclust train --method dino --data digits --out runs/digits-dino --epochs 30 --k 10
  deepclust train --config digits_dino --data digits --out runs/dd --set method_kwargs.teacher_temp=0.05
  deepclust train --out runs/dd --resume --epochs 60
  deepclust train --method dino --data digits28.npz --out runs/d28 --time 5m   # sized to 5 minutes
  deepclust train --method dino --init hf:facebook/dinov2-small --data photos/ --out runs/adapted --size 98
  deepclust cluster digits --k 10 --model runs/dd --out runs/dd-clusters
  deepclust train --method clip --data pairs.csv --out runs/clip --epochs 20   # columns path,caption
  deepclust train --method unicl --data cifar10/train --out runs/unicl --size 32  # class names -> captions
  deepclust train --method clip --data pairs.csv --init hf:facebook/dinov2-small --lock-image --out runs/lit
  deepclust zeroshot cifar10/test --model runs/unicl --classes-file cifar10 --out runs/unicl-zs"""

log = logging.getLogger("deepclust.train")


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train DeepCluster / SwAV / DINO on a source of images",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default=None, metavar="NAME",
                   help="deepcluster, swav, dino, ibot, dinov2, dac, scan; clip, align, unicl (image-caption pairs) "
                        "(or package.module:factory for a custom method)")
    p.add_argument("--data", default=None, metavar="SOURCE",
                   help="folder, .npz file, 'digits' or a known data set (cifar10, ...); clip/align/unicl: a .csv/"
                        ".jsonl of path,caption, a folder with .txt captions, or class folders (names -> captions)")
    p.add_argument("--out", required=True, metavar="DIR", help="run directory (created if missing)")
    p.add_argument("--config", default=None, metavar="YAML|NAME", help="recipe: a YAML file or a name in configs/")
    p.add_argument("--epochs", type=int, default=None, metavar="N")
    p.add_argument("--time", default=None, metavar="DURATION",
                   help="time budget, e.g. 90s, 60m, 2h, 1h30m: epochs and steps sized from the measured speed, "
                        "every schedule stretched to end in time (without a recipe and --epochs: 10m)")
    p.add_argument("--resume", action="store_true", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--batch-size", type=int, default=None, metavar="B", help="images per step and process")
    p.add_argument("--lr", type=float, default=None, help="base learning rate for a batch of 256")
    p.add_argument("--backbone", default=None, metavar="NAME", help="small_cnn, resnet18, vit_tiny, ...")
    p.add_argument("--k", type=int, default=None, metavar="K", help="number of clusters")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--size", type=int, default=None, metavar="S", help="working image size in pixels")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--head", choices=["scan", "temi", "none"], default=None,
                   help="the final clustering: a SCAN or TEMI head trained on the embeddings, or none (k-means); "
                        "kept in config.json as cluster_head, so `cluster --model DIR` uses it too "
                        "(default: the recipe's; without a recipe, scan)")
    p.add_argument("--init", default=None, metavar="SPEC",
                   help="start the backbone from SPEC: hf:<id>, a Hugging Face DINOv2/CLIP folder or a run")
    p.add_argument("--lock-image", action="store_true",
                   help="clip/align/unicl: freeze the image tower (LiT), e.g. with --init hf:facebook/dinov2-small")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field, e.g. --set optimizer=lars --set method_kwargs.epsilon=0.03")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    p.add_argument("--no-progress", dest="progress", action="store_false", help=argparse.SUPPRESS)  # old spelling
    p.add_argument("--trust-custom-code", action="store_true",
                   help="allow a package.module:factory method (its module is imported, i.e. run)")
    p.set_defaults(run=run)


def build_config(args: argparse.Namespace):
    from deepclust.errors import DeepclustError
    from deepclust.train.checkpoint import read_state
    from deepclust.train.config import TrainConfig

    overrides = _overrides(args)
    if args.resume and not args.config and not args.method:
        if not Path(args.out).is_dir() or read_state(args.out) is None:
            raise DeepclustError(f"nothing to resume in {args.out}: it holds no checkpoint (no epoch was completed "
                                 "there); start a new run with --method or --config")
        from deepclust.train.checkpoint import read_config

        base = read_config(args.out)
        base.update({k: v for k, v in overrides.items() if v is not None})
        cfg = TrainConfig.load(overrides=base, sets=_sets(args))
    else:
        if not args.config and not args.method:
            raise DeepclustError("say what to train: --method deepcluster|swav|dino or --config RECIPE")
        cfg = TrainConfig.load(args.config, overrides=overrides, sets=_sets(args))
    if not cfg.data:
        raise DeepclustError("no images to train on: pass --data SOURCE (a folder, .npz, 'digits', cifar10, ...)")
    from deepclust.train.init_from import INIT_GIVEN, resolve_init

    # --init: SPEC's architecture, size and mean/std unless given here; a resumed config is already resolved
    given = INIT_GIVEN if args.resume and not args.config and not args.method else (
        {k for k, v in overrides.items() if v is not None} | {s.split("=", 1)[0].split(".")[0] for s in args.sets})
    return resolve_init(cfg, given)


def _overrides(args: argparse.Namespace) -> dict:
    return {"method": args.method, "data": args.data, "epochs": args.epochs, "batch_size": args.batch_size,
            "lr": args.lr, "backbone": args.backbone, "k": args.k, "device": args.device, "image_size": args.size,
            "seed": args.seed, "init": args.init, "time_budget": args.time,
            "cluster_head": getattr(args, "head", None)}


def _uses_data_defaults(args: argparse.Namespace, cfg) -> bool:
    """No recipe, a new run, a registered image method (not image-text pairs), no --init."""
    from deepclust.methods import METHODS

    method = METHODS.get(cfg.method.lower().replace("-", "_"))
    return (not args.config and not args.resume and method is not None and not getattr(method, "paired_data", False)
            and not cfg.init)


def _sets(args: argparse.Namespace) -> list[str]:
    """``--set`` items, plus what switches such as ``--lock-image`` stand for."""
    return list(args.sets) + (["method_kwargs.lock_image=true"] if getattr(args, "lock_image", False) else [])


def load_training_data(cfg, *, progress: bool):
    """The store ``cfg`` trains on: image-caption pairs (`deepclust.data.pairs.load_pairs`) for
    clip / align / unicl, else the images (`deepclust.data.store.load_images`)."""
    from deepclust.data.store import load_images
    from deepclust.methods import METHODS

    method = METHODS.get(cfg.method.lower().replace("-", "_"))
    if getattr(method, "paired_data", False):
        from deepclust.data.pairs import load_pairs

        return load_pairs(cfg.data, size=cfg.image_size, templates=cfg.method_kwargs.get("templates"),
                          progress=progress)
    return load_images(cfg.data, size=cfg.image_size, progress=progress)


def run(args: argparse.Namespace) -> int:
    from deepclust.core.device import resolve_device
    from deepclust.core.distributed import barrier, cleanup, get_rank, init_from_env
    from deepclust.core.outdir import output_lock
    from deepclust.data.store import load_images
    from deepclust.pipeline import cluster_store
    from deepclust.train.defaults import MAX_CPU_SIZE, apply_defaults, given_keys
    from deepclust.train.loop import train

    cfg = build_config(args)
    resolve_device(cfg.device)  # a clear error for --device gpu9 / cuda without CUDA, before any work
    device = init_from_env(cfg.device)
    auto = _uses_data_defaults(args, cfg)  # no recipe: settings chosen from the data (deepclust.train.defaults)
    rank = get_rank()
    show = args.progress and rank == 0
    stack = contextlib.ExitStack()
    try:
        if rank == 0:  # check and lock DIR before minutes of decoding (train() and the clustering re-enter it)
            stack.enter_context(output_lock(args.out))
        # rank 0 decodes the source into the cache first; the others then open the cached store
        store = eval_store = None
        for turn in (0, 1):
            if (rank == 0) == (turn == 0):
                if auto:   # decoded at the native size, then the settings chosen from it (maybe another size)
                    store = load_images(cfg.data, size=args.size,
                                        max_size=MAX_CPU_SIZE if device.type == "cpu" else 96, progress=show)
                    cfg, _ = apply_defaults(cfg, store.images, given_keys(_overrides(args), _sets(args)))
                    if cfg.image_size != store.images.shape[1]:
                        store = load_images(cfg.data, size=cfg.image_size, progress=show)
                else:
                    store = load_training_data(cfg, progress=show)
                eval_store = (load_images(cfg.eval_data, size=store.images.shape[1], progress=show)
                              if cfg.eval_data else None)
            barrier()
        out = train(cfg, store, args.out, resume=args.resume, progress=show, eval_store=eval_store,
                    trust_custom_code=args.trust_custom_code)
        if rank == 0:
            # The same pipeline as `deepclust cluster SOURCE --model OUT --k K`: same numbers.
            result = cluster_store(store, k=cfg.k, out_dir=out, model=str(out), device=str(device),
                                   seed=cfg.seed, report=getattr(args, "report", True), progress=show,
                                   trust_custom_code=args.trust_custom_code)
            print(f"trained {cfg.method} on {cfg.data} -> {out}")
            print(format_summary(result.info))
        barrier()
    finally:
        stack.close()
        cleanup()
    return 0


def format_summary(metrics: dict) -> str:
    """One line: images, clusters used, sizes and the scores that are known."""
    keys = ["acc", "nmi", "ari", "knn_acc", "head_acc", "head_nmi"]
    shown = ", ".join(f"{k}={metrics[k]:.4f}" for k in keys if isinstance(metrics.get(k), float))
    sizes = metrics["cluster_sizes"]
    return (f"{metrics['n_images']} images -> {sum(1 for s in sizes if s)} clusters "
            f"(sizes {min(sizes)}..{max(sizes)})" + (f"; {shown}" if shown else ""))
