"""``deepclust curate``: duplicates, decontamination, retrieval and balanced sampling of a source."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Curate the images of SOURCE and write what to keep, and why the rest goes, to DIR
(nothing in SOURCE is modified or deleted):

  keep.csv        the images kept (path)
  removed.csv     path,kind,reason,other,similarity for every image not kept: exact
                  duplicate of X, near duplicate of X (sim), contaminates EVAL (sim),
                  not retrieved, not sampled
  duplicates.csv  group,path,kind,similarity: every member of every duplicate group, the
                  kept one first (the member whose path sorts first is kept)
  summary.json    counts, threshold, features, and the faiss index used by each search
  curation.html   duplicate groups side by side, cluster balance before/after sampling

Steps, in order: --against (remove near duplicates of an evaluation set), exact duplicates
(identical decoded pixels), near duplicates (cosine similarity >= --threshold of the
L2-normalised embeddings, groups = connected components), --seed (keep the --per-query
nearest images to each seed image), --target-size (hierarchical k-means sampling).

Features: raw pixels by default (centred on SOURCE's mean, then L2-normalised), --features pca,
or a model (--model: a training run directory, hf:<id>, a Hugging Face folder). The default
threshold depends on the features: raw 0.97, pca 0.90, a model 0.95 (see docs/curation.md)."""

EPILOG = """\
Example:
  deepclust curate photos/ --out runs/photos-curated
  deepclust curate photos/ --model runs/dino-photos --threshold 0.9 --out runs/curated
  deepclust curate photos/ --against eval_photos/ --out runs/decontaminated
  deepclust curate web/ --seed curated/ --per-query 4 --model hf:facebook/dinov2-small --out runs/retrieved
  deepclust curate photos/ --features pca --target-size 1000 --levels 2 --out runs/balanced"""


def _clusters(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected whole numbers separated by commas, e.g. 100,10; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number of clusters")
    return values


def register(subparsers) -> None:
    p = subparsers.add_parser("curate", help="find duplicates, decontaminate, retrieve and balance a source",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE", help="folder, .npz file, 'digits' or a known data set")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--features", choices=["raw", "pca"], default=None,
                   help="pixel features when no --model is given (default: raw)")
    p.add_argument("--model", metavar="DIR|hf:ID", default=None,
                   help="embed with a training run directory, hf:<id or dir>, or a Hugging Face folder")
    p.add_argument("--pca-dim", type=int, default=50, metavar="D",
                   help="dimensions kept by --features pca (default: 50; at most the number of images)")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help="working image size (default: chosen from the source, at most 96; a run's own size)")
    p.add_argument("--threshold", type=float, default=None, metavar="COS",
                   help="near duplicates: absolute cosine similarity in (0, 1] at or above which two images "
                        "are near duplicates (default: raw 0.97, pca 0.90, a model 0.95)")
    p.add_argument("--against", metavar="EVAL_SOURCE", default=None,
                   help="remove images that are near duplicates of any image of this evaluation source")
    p.add_argument("--seed", metavar="CURATED_SOURCE", default=None, dest="seed_source",
                   help="keep only the --per-query nearest images to each image of this curated source")
    p.add_argument("--per-query", type=int, default=4, metavar="N",
                   help="images retrieved per seed image (default: 4, as DINOv2)")
    p.add_argument("--target-size", type=int, default=None, metavar="N",
                   help="sample down to N images with hierarchical k-means (balanced over clusters)")
    p.add_argument("--levels", type=int, default=2, metavar="L", help="hierarchical k-means levels (default: 2)")
    p.add_argument("--clusters", type=_clusters, default=None, metavar="K1,K2,..",
                   help="clusters per level, first level first, decreasing (default: N^(2/3), N^(1/3) for 2 "
                        "levels; see docs/curation.md)")
    p.add_argument("--resample-steps", type=int, default=1, metavar="R",
                   help="resampling steps after each level's k-means (default: 1)")
    p.add_argument("--neighbors", type=int, default=10, metavar="K",
                   help="neighbours per image in the near-duplicate graph (default: 10)")
    p.add_argument("--exact-limit", type=int, default=100_000, metavar="N",
                   help="exact search (IndexFlatIP) up to N vectors, IVF above (default: 100000)")
    p.add_argument("--random-seed", type=int, default=0, dest="random_seed", help="k-means seed (default: 0)")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not write curation.html")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepclust.curate import curate

    result = curate(
        args.source, out_dir=args.out, model=args.model, features=args.features, size=args.size, pca_dim=args.pca_dim,
        threshold=args.threshold, against=args.against, seed_source=args.seed_source, per_query=args.per_query,
        target_size=args.target_size, levels=args.levels, clusters=args.clusters,
        resample_steps=args.resample_steps, neighbors=args.neighbors, exact_limit=args.exact_limit,
        seed=args.random_seed, device=args.device, report=args.report, progress=not args.quiet,
    )
    s = result.summary
    removed = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in s["removed"].items() if n) or "none"
    print(f"{s['n_kept']} of {s['n_images']} images kept ({s['n_skipped']} unreadable files skipped); "
          f"removed: {removed}")
    print(f"{s['exact_groups']} exact and {s['near_groups']} near duplicate groups at cosine >= {s['threshold']} "
          f"({s['features']} features; {s['index'].get('near_duplicates', '')})")
    for name in ("keep", "removed", "duplicates", "report", "summary"):
        if name in result.files:
            print(f"{name:>10}: {result.files[name]}")
    return 0
