"""``deepclust evaluate``: how good are frozen features? k-NN, linear probe, few-shot."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

DESCRIPTION = """\
Evaluate the frozen features of a model on a labelled train/test pair:

  k-NN       weighted k-nearest-neighbour vote (cosine, temperature 0.07), as in DINO
  linear     a linear classifier (logistic regression) trained on the train features
  few-shot   N-way K-shot nearest-prototype episodes on the test features (mean and 95% CI)

--model is anything `deepclust cluster` accepts: raw, pca, a trained run directory,
a pretrained model hf:<id or dir> or a Hugging Face model folder. Both sources need class sub-folders (or labels).
Writes DIR/metrics.json and prints a table."""

EPILOG = """\
Example:
  deepclust evaluate --model hf:facebook/dinov2-small --train cifar10 --test cifar10:test --out runs/eval
  deepclust evaluate --model pca --train data/train --test data/test --fewshot 5way1shot --out runs/eval-pca"""


def register(subparsers) -> None:
    from deepclust.commands._pretrained_common import add_common_args

    p = subparsers.add_parser("evaluate", help="k-NN / linear-probe / few-shot accuracy of frozen features",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="SPEC",
                   help="raw, pca, a run directory, hf:<id or dir> or a HF folder")
    p.add_argument("--train", required=True, metavar="SOURCE", help="labelled training images")
    p.add_argument("--test", required=True, metavar="SOURCE", help="labelled test images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--knn-k", type=int, default=20, metavar="K", help="neighbours for k-NN (default: 20)")
    p.add_argument("--fewshot", default="5way5shot", metavar="NwayKshot",
                   help="few-shot episodes, e.g. 5way1shot, or 'none' (default: 5way5shot)")
    p.add_argument("--episodes", type=int, default=600, help="few-shot episodes (default: 600)")
    p.add_argument("--queries", type=int, default=15, help="query images per class and episode (default: 15)")
    p.add_argument("--no-linear", dest="linear", action="store_false", help="skip the linear probe")
    p.add_argument("--pooling", choices=["cls", "mean", "both"], default=None,
                   help="hf: models only: CLS token, mean of patch tokens, or both (default: cls)")
    p.add_argument("--pca-dim", type=int, default=50, metavar="D", help="dimensions for --model pca (default: 50)")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, size_help="working image size (default: from the train source; the test set is "
                                 "decoded at the same size)")
    p.set_defaults(run=run)


def parse_fewshot(text: str) -> tuple[int, int] | None:
    """``"5way5shot"`` -> ``(5, 5)``; ``"none"`` -> None."""
    from deepclust.errors import DeepclustError

    if text.strip().lower() in ("none", "no", "off", ""):
        return None
    m = re.fullmatch(r"\s*(\d+)\s*-?\s*way\s*-?\s*(\d+)\s*-?\s*shots?\s*", text.lower())
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 1:
        raise DeepclustError(f"--fewshot '{text}' is not like 5way5shot (N >= 2 ways, K >= 1 shots) or 'none'")
    return int(m.group(1)), int(m.group(2))


def _labelled(store, role: str):
    import numpy as np

    from deepclust.errors import DataError

    if store.labels is None or not (np.asarray(store.labels) >= 0).any():
        raise DataError(f"the {role} source has no labels: evaluation needs class sub-folders "
                        f"(or a labelled data set such as cifar10)")
    return np.asarray(store.labels, dtype=np.int64)


def _align_test_labels(train_store, test_store, test_y):
    """Test labels re-indexed to the train set's class order (by folder name)."""
    import numpy as np

    from deepclust.errors import DataError

    if not train_store.class_names or not test_store.class_names or \
            list(train_store.class_names) == list(test_store.class_names):
        return test_y
    index = {n: i for i, n in enumerate(train_store.class_names)}
    missing = sorted(set(test_store.class_names) - set(index))
    if len(missing) == len(test_store.class_names):
        raise DataError("the train and test sources share no class names")
    remap = np.array([index.get(n, -1) for n in test_store.class_names], dtype=np.int64)
    return np.where(test_y >= 0, remap[np.clip(test_y, 0, None)], -1)


def compute_features(loaded, train_store, test_store, *, batch_size: int, progress: bool):
    """Train and test embeddings of one loaded model; a PCA is fitted on the train set only."""
    from deepclust.features import embed_store

    # The first call fits a PCA encoder on the train store; the test set reuses that fit.
    xtr = embed_store(loaded, train_store, batch_size=batch_size, progress=progress).features
    if loaded.kind == "pca" and not loaded.encoder.fitted:
        loaded.encoder.fit(train_store.images, batch_size=batch_size)
    xte = embed_store(loaded, test_store, batch_size=batch_size, cache=loaded.kind != "pca",
                      progress=progress).features
    return xtr, xte


def run(args: argparse.Namespace) -> int:
    from deepclust.core.device import resolve_device
    from deepclust.core.io import atomic_write_json
    from deepclust.data.store import load_images
    from deepclust.errors import DeepclustError
    from deepclust.evaluate.fewshot import fewshot_accuracy
    from deepclust.evaluate.knn import knn_accuracy
    from deepclust.evaluate.linear_probe import linear_probe_accuracy
    from deepclust.features import load_model
    from deepclust.features.load import spec_kind

    fewshot = parse_fewshot(args.fewshot)
    if args.knn_k < 1:
        raise DeepclustError(f"--knn-k must be at least 1, got {args.knn_k}")
    device = resolve_device(args.device)
    kind = spec_kind(args.model)
    if args.pooling is not None and kind != "hf":
        raise DeepclustError("--pooling applies to Hugging Face models (hf:...) only")
    hf = {"pooling": args.pooling} if args.pooling else {}
    # Models are loaded before decoding (a missing one fails fast); pixel baselines need the size.
    loaded = None if kind in ("raw", "pca") else load_model(args.model, device=device, **hf)
    progress = not args.quiet
    size = args.size or (loaded.image_size if loaded is not None else None)
    max_size = loaded.max_size if loaded is not None else 96
    train = load_images(args.train, size=size, max_size=max_size, progress=progress)
    # The same working size for both, so pixel features have the same dimension.
    test = load_images(args.test, size=int(train.images.shape[1]), progress=progress)
    train_y = _labelled(train, "train")
    test_y = _align_test_labels(train, test, _labelled(test, "test"))

    t0 = time.perf_counter()
    if loaded is None:
        loaded = load_model(args.model, device=device, image_size=int(train.images.shape[1]),
                            pca_dim=min(args.pca_dim, len(train.paths)), seed=args.seed)
    xtr, xte = compute_features(loaded, train, test, batch_size=args.batch_size, progress=progress)
    metrics: dict = {"model": args.model, "train": args.train, "test": args.test,
                     "n_train": int(len(xtr)), "n_test": int(len(xte)), "dim": int(xtr.shape[1]),
                     "seconds_features": round(time.perf_counter() - t0, 3)}
    k = min(args.knn_k, len(xtr))
    metrics["knn_k"] = k
    metrics["knn_acc"] = knn_accuracy(xtr, train_y, xte, test_y, k=k, device=str(device))
    if args.linear:
        metrics["linear_acc"] = linear_probe_accuracy(xtr, train_y, xte, test_y, seed=args.seed, device=str(device))
    if fewshot is not None:
        n_way, k_shot = fewshot
        try:
            mean, ci = fewshot_accuracy(xte, test_y, n_way=n_way, k_shot=k_shot, n_query=args.queries,
                                        n_episodes=args.episodes, seed=args.seed)
            metrics.update({"fewshot": f"{n_way}way{k_shot}shot", "fewshot_acc": mean, "fewshot_ci95": ci})
        except DeepclustError as exc:
            metrics["fewshot_error"] = str(exc)
            print(f"note: few-shot skipped: {exc}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "metrics.json", metrics)
    print(format_table(metrics))
    print(f"metrics: {out / 'metrics.json'}")
    return 0


def format_table(m: dict) -> str:
    lines = [f"features {m['model']} ({m['dim']}-d), {m['n_train']} train / {m['n_test']} test images",
             f"{'evaluation':<24}{'accuracy':>10}"]
    lines.append(f"{'k-NN (k=' + str(m['knn_k']) + ')':<24}{m['knn_acc']:>10.4f}")
    if "linear_acc" in m:
        lines.append(f"{'linear probe':<24}{m['linear_acc']:>10.4f}")
    if "fewshot_acc" in m:
        lines.append(f"{m['fewshot'] + ' few-shot':<24}{m['fewshot_acc']:>10.4f} ± {m['fewshot_ci95']:.4f}")
    return "\n".join(lines)
