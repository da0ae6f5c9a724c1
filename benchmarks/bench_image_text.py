"""Image-text contrastive training on CIFAR-10 (issue 10): CLIP, ALIGN and UniCL, same encoder, same budget.

For each objective: train ``--method OBJ`` from scratch on the CIFAR-10 train folder with
class names turned into captions by the 8 templates of `deepclust.data.pairs.CAPTION_TEMPLATES`
(Florence/UniCL's image-label data), then on the CIFAR-10 test folder:

* zero-shot accuracy with 8 prompt templates **not seen in training** (the other half of
  `deepclust.zeroshot.DEFAULT_TEMPLATES`), prompt-ensembled as in CLIP;
* a linear probe (`deepclust.evaluate.linear_probe`, L-BFGS, weight decay picked on a held-out
  part of train) on the same run's image-tower features (before the projection), train -> test;
* class-level retrieval recall@1/5 (`deepclust.evaluate.retrieval.recall_at_k`): the texts are
  the 80 unseen prompts (8 templates x 10 classes); a retrieved text / image of the right class is
  a hit (image -> text R@1 is single-prompt zero-shot accuracy);
* training images/s (from log.csv; under load when other jobs share the machine).

Chance: 0.10 zero-shot accuracy. Labels are used to build the captions (that is the point of
image-label data) and for evaluation.

Example (the measurement in benchmarks/results/image_text.md, ~8 min per objective on 1 thread):
    nice -n 5 python benchmarks/bench_image_text.py --train /tmp/cifar10/train --test /tmp/cifar10/test \\
        --objectives clip,align,unicl --epochs 4 --max-train 20000 --threads 1 --out /tmp/bench_it \\
        --results benchmarks/results/image_text.json
Smoke (seconds):
    python benchmarks/bench_image_text.py --train /tmp/cifar10/train --test /tmp/cifar10/test \\
        --objectives clip --epochs 1 --max-train 512 --max-test 256 --out /tmp/bench_it_smoke
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deepclust.data.pairs import CAPTION_TEMPLATES, PairStore, load_pairs  # noqa: E402
from deepclust.data.store import load_images  # noqa: E402
from deepclust.evaluate.linear_probe import fit_linear_probe  # noqa: E402
from deepclust.evaluate.retrieval import recall_at_k  # noqa: E402
from deepclust.features import load_model  # noqa: E402
from deepclust.models.encoder import embed_images  # noqa: E402
from deepclust.train.config import TrainConfig  # noqa: E402
from deepclust.train.loop import train  # noqa: E402
from deepclust.zeroshot import DEFAULT_TEMPLATES, zero_shot_classify  # noqa: E402
from machine import machine_line  # noqa: E402

EVAL_TEMPLATES = tuple(t for t in DEFAULT_TEMPLATES if t not in CAPTION_TEMPLATES)


def subset(store: PairStore, n: int, seed: int = 0) -> PairStore:
    """A class-balanced random subset of ``n`` images (all when ``n`` is 0 or too large)."""
    if not n or n >= len(store):
        return store
    rng = np.random.default_rng(seed)
    labels = np.asarray(store.labels)
    classes = np.unique(labels)
    keep = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:n // len(classes)]
                                   for c in classes]))
    ids, offsets = [], [0]
    for i in keep:
        lo, hi = store.caption_offsets[i], store.caption_offsets[i + 1]
        ids.extend(store.caption_ids[lo:hi])
        offsets.append(len(ids))
    return PairStore(images=np.asarray(store.images[keep]), paths=[store.paths[i] for i in keep], labels=labels[keep],
                     class_names=store.class_names, skipped=[], source_id=f"{store.source_id}-sub{n}-{seed}",
                     texts=store.texts, caption_ids=np.asarray(ids, np.int64),
                     caption_offsets=np.asarray(offsets, np.int64), pair_labels=store.pair_labels[keep],
                     kind=store.kind)


def train_objective(args: argparse.Namespace, objective: str, store: PairStore, out: Path) -> float:
    """Train one objective; returns the wall time in seconds."""
    if out.exists():
        shutil.rmtree(out)
    cfg = TrainConfig(method=objective, backbone=args.backbone, backbone_kwargs=json.loads(args.backbone_kwargs),
                      k=10, image_size=32, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                      warmup_epochs=min(1.0, args.epochs / 5), weight_decay=0.1,
                      method_kwargs={"embed_dim": 128, "context_length": 16, "text_width": 128, "text_layers": 2,
                                     "text_heads": 4, "vocab_size": 1024},
                      device="cpu", knn_every=0, monitor_samples=512, collapse_check=False, num_workers=1,
                      torch_threads=args.threads, seed=args.seed)
    start = time.perf_counter()
    train(cfg, store, out, progress=args.progress)
    return time.perf_counter() - start


def evaluate(run: Path, train_store: PairStore, test, n_threads: int) -> dict:
    loaded = load_model(str(run), device="cpu")
    enc = loaded.encoder
    names = list(test.class_names)
    labels = np.asarray(test.labels)
    t0 = time.perf_counter()
    image_emb = torch.from_numpy(enc.embed(test.images, batch_size=512, progress=False))
    _, pred = zero_shot_classify(enc, test.images, names, EVAL_TEMPLATES, progress=False,
                                 image_embeds=torch.nn.functional.normalize(image_emb, dim=-1))
    zs = float((pred == labels).mean())
    prompts = [t.format(n.replace("_", " ")) for n in names for t in EVAL_TEMPLATES]
    text_keys = np.repeat(np.arange(len(names)), len(EVAL_TEMPLATES))
    recall = recall_at_k(image_emb, enc.text_features(prompts), labels, text_keys, ks=(1, 5))
    tower = enc.image  # the image tower: features before the projection
    train_x = embed_images(tower, train_store.images, batch_size=512)
    test_x = embed_images(tower, test.images, batch_size=512)
    probe = fit_linear_probe(train_x, np.asarray(train_store.labels), test_x, labels, seed=0)
    with open(run / "log.csv") as f:
        rows = list(csv.DictReader(f))
    return {"zero_shot_acc": zs, "linear_probe_acc": probe.accuracy, **recall,
            "images_per_s": float(np.mean([float(r["images_per_s"]) for r in rows])),
            "final_loss": float(rows[-1]["loss"]), "logit_scale": float(rows[-1].get("logit_scale", "nan")),
            "eval_s": time.perf_counter() - t0, "threads": n_threads}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--train", default="/tmp/cifar10/train")
    p.add_argument("--test", default="/tmp/cifar10/test")
    p.add_argument("--objectives", default="clip,align,unicl")
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--backbone-kwargs", default='{"widths": [32, 64, 128], "convs_per_stage": 1}', metavar="JSON")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="base lr for a batch of 256")
    p.add_argument("--max-train", type=int, default=0, help="class-balanced subset of the train set (0: all)")
    p.add_argument("--max-test", type=int, default=0, help="first N test images (0: all 10,000)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="/tmp/bench_image_text")
    p.add_argument("--results", default=None, help="also write the JSON here")
    p.add_argument("--progress", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    store = subset(load_pairs(args.train, size=32, progress=args.progress), args.max_train, args.seed)
    test = load_images(args.test, size=32, progress=args.progress)
    if args.max_test:
        idx = np.random.default_rng(0).permutation(len(test))[:args.max_test]
        test = type(test)(images=np.asarray(test.images[np.sort(idx)]), paths=[test.paths[i] for i in np.sort(idx)],
                          labels=np.asarray(test.labels)[np.sort(idx)], class_names=test.class_names, skipped=[],
                          source_id=f"{test.source_id}-{args.max_test}")
    results = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine_line(), "loadavg_start": os.getloadavg(), "n_train": len(store),
               "n_test": len(test), "epochs": args.epochs, "batch_size": args.batch_size, "backbone": args.backbone,
               "backbone_kwargs": json.loads(args.backbone_kwargs), "lr": args.lr,
               "train_templates": list(CAPTION_TEMPLATES), "eval_templates": list(EVAL_TEMPLATES), "runs": {}}
    for objective in [o.strip() for o in args.objectives.split(",") if o.strip()]:
        run = Path(args.out) / objective
        seconds = train_objective(args, objective, store, run)
        results["runs"][objective] = {"train_s": seconds, **evaluate(run, store, test, args.threads),
                                      "loadavg": os.getloadavg()}
        print(json.dumps({objective: results["runs"][objective]}), flush=True)
    print(markdown(results))
    if args.results:
        Path(args.results).write_text(json.dumps(results, indent=1))


def markdown(results: dict) -> str:
    lines = [f"{results['date']}; {results['machine']}; {results['n_train']} train / {results['n_test']} test images, "
             f"{results['backbone']} 32 px, {results['epochs']} epochs x batch {results['batch_size']}",
             "", "| objective | zero-shot acc (unseen prompts) | linear probe acc | i2t R@1 | i2t R@5 | t2i R@1 | "
             "t2i R@5 | train img/s | train min |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results["runs"].items():
        lines.append(f"| {name} | {r['zero_shot_acc']:.3f} | {r['linear_probe_acc']:.3f} | {r['i2t_r1']:.3f} | "
                     f"{r['i2t_r5']:.3f} | {r['t2i_r1']:.3f} | {r['t2i_r5']:.3f} | {r['images_per_s']:.0f} | "
                     f"{r['train_s'] / 60:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
