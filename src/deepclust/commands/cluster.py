"""``deepclust cluster``: group a folder (or any source) of images into k clusters."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Group the images of SOURCE into K clusters and write the result to DIR:

  assignments.csv  one row per usable image: path, cluster (and true label if known)
  metrics.json     ACC/NMI/ARI when the source has class sub-folders, cluster sizes
  skipped.csv      every file that could not be used, with the reason
  summary.txt      size, purity and majority class of each cluster
  report.html      a gallery of every cluster (unless --no-report)

SOURCE is a folder of images (class sub-folders are used for evaluation only),
an .npz file, `digits`, or a known data set name (cifar10, cifar10:test, ...).
Features are raw pixels or PCA of them, or those of a model (--model);
--namer gives each cluster names from a vocabulary with CLIP."""

EPILOG = """\
Example:
  deepclust cluster photos/ --k 10 --out runs/photos
  deepclust cluster digits --k 10 --features pca --out runs/digits
  deepclust cluster photos/ --k 20 --model runs/dino-photos --balanced --out runs/photos-dino
  deepclust cluster photos/ --k 10 --model hf:facebook/dinov2-small \\
      --namer hf:openai/clip-vit-base-patch32 --vocab common --out runs/photos-named
  deepclust cluster photos/ --k 10 --model ./dinov2-small --attention --out runs/photos-attn
      (./dinov2-small: a folder written by save_pretrained or `hf download --local-dir`)"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="group a folder of images into k clusters",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="folder, .npz file, 'digits' or a known data set")
    p.add_argument("--k", type=int, required=True, metavar="K", help="number of clusters (>= 2)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--features", choices=["raw", "pca"], default="raw",
                   help="pixel features when no --model is given (default: raw)")
    p.add_argument("--model", metavar="DIR|hf:ID", default=None,
                   help="embed with a trained run directory, a pretrained model hf:<id or dir>, or a "
                        "Hugging Face model folder (no prefix needed); overrides --features")
    p.add_argument("--pca-dim", type=int, default=None, metavar="D",
                   help="dimensions kept by --features pca (default: 50)")
    p.add_argument("--whiten", type=int, default=None, metavar="D", dest="whiten_dim",
                   help="PCA-whiten learned features to D dims before k-means (0: off; "
                        "default: the trained run's recipe setting, else off)")
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help="working image size in pixels (default: chosen from the source, at most 96)")
    p.add_argument("--seed", type=int, default=0, help="random seed for k-means (default: 0)")
    p.add_argument("--n-init", type=int, default=10, metavar="N",
                   help="k-means restarts; the best is kept (default: 10)")
    p.add_argument("--balanced", action="store_true",
                   help="force clusters of near-equal size (Sinkhorn assignment to the centroids)")
    p.add_argument("--namer", metavar="hf:ID|DIR", default=None,
                   help="name each cluster with a CLIP model, e.g. hf:openai/clip-vit-base-patch32 (the same "
                        "CLIP as --model reuses its embeddings)")
    p.add_argument("--vocab", metavar="NAME|FILE", default=None,
                   help="names to choose from with --namer: cifar10, cifar100, common (default), "
                        "a text file with one name per line, or 'cat,dog,car'")
    p.add_argument("--attention", action="store_true",
                   help="show ViT attention maps (DINO's 60%% masks) of a few images per cluster in the "
                        "report; needs a ViT --model (hf:... or a vit_* run)")
    p.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--no-progress", dest="quiet", action="store_true", help=argparse.SUPPRESS)  # other spelling
    p.add_argument("--trust-custom-code", action="store_true",
                   help="allow a run whose method is package.module:factory (its module is imported, i.e. run)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepclust.errors import DeepclustError
    from deepclust.pipeline import DEFAULT_PCA_DIM, DEFAULT_VOCAB, cluster_source

    if args.vocab and not args.namer:
        raise DeepclustError("--vocab only has an effect with --namer hf:<CLIP model>; add --namer or drop --vocab.")

    result = cluster_source(
        args.source,
        k=args.k,
        out_dir=args.out,
        features=args.features,
        model=args.model,
        size=args.size,
        whiten_dim=args.whiten_dim,
        seed=args.seed,
        n_init=args.n_init,
        balanced=args.balanced,
        pca_dim=args.pca_dim or DEFAULT_PCA_DIM,
        device=args.device,
        report=args.report,
        namer=args.namer,
        vocab=args.vocab or DEFAULT_VOCAB,
        attention=args.attention,
        progress=not args.quiet,
        trust_custom_code=args.trust_custom_code,
    )
    info = result.info
    print(result.summary, end="")
    print(f"{info['n_images']} images in {info['k']} clusters ({info['n_skipped']} skipped), "
          f"{info['features']} features, {info['seconds']:.1f} s")
    if result.metrics:
        m = result.metrics
        print(f"ACC {m['acc']:.3f}  NMI {m['nmi']:.3f}  ARI {m['ari']:.3f}  "
              f"(against {m['n_evaluated']} known labels)")
    for name in ("assignments", "metrics", "skipped", "report"):
        if name in result.files:
            print(f"{name:>11}: {result.files[name]}")
    return 0
