"""``deepclust zeroshot``: classify images among given class names with CLIP, no training."""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = """\
Classify every image of SOURCE among the given class names with a CLIP model: a
pretrained one (hf:...) or a run trained with `deepclust train --method clip|align|unicl`
(prompt ensembling over 16 templates such as "a photo of a {}.", or --template).

Writes DIR/predictions.csv (path, class, score) and DIR/metrics.json. When SOURCE
has class sub-folders whose names match the class names (case-insensitive, '_' = ' '),
the accuracy is computed and printed."""

EPILOG = """\
Example:
  deepclust zeroshot photos/ --model hf:openai/clip-vit-base-patch32 \\
      --classes "cat,dog,car" --out runs/zs
  deepclust zeroshot cifar10:test --model hf:openai/clip-vit-base-patch32 \\
      --classes-file cifar10 --template "a photo of a {}." --out runs/zs-cifar
  deepclust zeroshot cifar10/test --model runs/clip-cifar --classes-file cifar10 --out runs/zs-run"""


def register(subparsers) -> None:
    from deepclust.commands._pretrained_common import add_common_args

    p = subparsers.add_parser("zeroshot", help="zero-shot classification with CLIP",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="folder, .npz file, 'digits' or a known data set")
    p.add_argument("--model", required=True, metavar="hf:ID|DIR",
                   help="a CLIP model: hf:openai/clip-vit-base-patch32, a save_pretrained folder, or a run "
                        "trained with --method clip|align|unicl")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--classes", metavar="A,B,...", help="comma-separated class names")
    names.add_argument("--classes-file", metavar="FILE",
                       help="one class name per line, or a built-in list: cifar10, cifar100, common")
    p.add_argument("--template", metavar="TEXT", default=None,
                   help="a single prompt template with {} for the name (default: 16-template ensemble)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    add_common_args(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from deepclust.core.io import atomic_write_csv, atomic_write_json
    from deepclust.data.store import load_images
    from deepclust.features import load_model
    from deepclust.models.pretrained import require_clip
    from deepclust.naming import load_vocabulary
    from deepclust.zeroshot import (
        DEFAULT_TEMPLATES,
        check_class_names,
        check_templates,
        match_labels,
        zero_shot_classify,
    )

    class_names = check_class_names(load_vocabulary(args.classes_file) if args.classes_file
                                    else args.classes.split(","))
    templates = check_templates([args.template] if args.template else DEFAULT_TEMPLATES)
    loaded = load_model(args.model, device=args.device)              # fail fast, before decoding
    clip = require_clip(loaded.encoder, args.model)
    size = args.size if args.size is not None else loaded.image_size   # a run: the size it was trained at
    store = load_images(args.source, size=size, max_size=loaded.max_size, progress=not args.quiet)
    probs, pred = zero_shot_classify(clip, store.images, class_names, templates,
                                     batch_size=args.batch_size, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [[path, class_names[p], f"{probs[i, p]:.6f}"] for i, (path, p) in enumerate(zip(store.paths, pred))]
    atomic_write_csv(out / "predictions.csv", ["path", "class", "score"], rows)

    metrics: dict = {"model": args.model, "n_images": len(store.paths), "n_skipped": len(store.skipped),
                     "classes": class_names, "n_templates": len(templates),
                     "predicted_counts": {class_names[c]: int(n) for c, n in
                                          zip(*np.unique(pred, return_counts=True))}}
    if store.labels is not None and store.class_names:
        mapping = match_labels(class_names, store.class_names)          # class idx -> label idx
        matched_labels = set(mapping.values())
        known = np.array([lab in matched_labels for lab in store.labels])
        unmatched = sorted(n for i, n in enumerate(store.class_names) if i not in matched_labels)
        if known.any():
            pred_labels = np.array([mapping.get(int(p), -1) for p in pred])
            acc = float((pred_labels[known] == store.labels[known]).mean())
            metrics.update(accuracy=acc, n_evaluated=int(known.sum()))
            print(f"zero-shot accuracy {acc:.4f} on {int(known.sum())} labelled images")
        if unmatched:
            metrics["unmatched_folders"] = unmatched
            print(f"note: folders with no matching class name (not scored): {', '.join(unmatched)}")
    atomic_write_json(out / "metrics.json", metrics)
    print(f"{len(store.paths)} images classified into {len(class_names)} classes "
          f"({len(store.skipped)} skipped)")
    print(f"predictions: {out / 'predictions.csv'}\n    metrics: {out / 'metrics.json'}")
    return 0
