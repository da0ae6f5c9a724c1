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
      (./dinov2-small: a folder written by save_pretrained or `hf download --local-dir`)
  deepclust cluster digits --k 10 --head scan --self-label --out runs/digits-scan
  deepclust cluster photos/ --k auto --k-range 2:30 --reduce pca --model hf:facebook/dinov2-small --out runs/auto
  deepclust cluster photos/ --clusterer hdbscan --reduce umap --model hf:facebook/dinov2-small --out runs/dense
      (heads, --k auto, --reduce and HDBSCAN: docs/heads.md)"""


def _k_value(value: str) -> int | str:
    """``--k 10`` or ``--k auto``."""
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of clusters or 'auto', got {value!r}") from None


def _add_clustering_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("clustering heads, k from the data, reduction, HDBSCAN (docs/heads.md)")
    g.add_argument("--k-range", default=None, metavar="LO:HI",
                   help="the k tried by --k auto, inclusive (default: 2:30); the silhouette chooses")
    g.add_argument("--clusterer", choices=["kmeans", "hdbscan"], default="kmeans",
                   help="kmeans (default) or hdbscan: finds the number of clusters (no --k) and labels "
                        "outliers as noise, cluster -1")
    g.add_argument("--min-cluster-size", type=int, default=None, metavar="N",
                   help="HDBSCAN's smallest cluster (default: max(5, 1%% of the images))")
    g.add_argument("--reduce", choices=["pca", "umap"], default=None,
                   help="reduce the embeddings first: pca, or umap (pip install 'deepclust[umap]')")
    g.add_argument("--reduce-dim", type=int, default=None, metavar="D",
                   help="dimensions after --reduce (default: 50 for pca, 10 for umap)")
    g.add_argument("--head", choices=["scan", "temi", "none"], default="auto",
                   help="train clustering heads on the embeddings (SCAN or TEMI) and use the lowest-loss one; "
                        "none: k-means alone (default: a trained run's recipe setting, cluster_head, else none)")
    g.add_argument("--self-label", action="store_true",
                   help="with --head scan: fine-tune the head on its confident (> 0.99) predictions")
    g.add_argument("--entropy-weight", type=float, default=None, metavar="W",
                   help="SCAN's entropy weight (default: 5; lower it for imbalanced classes)")
    g.add_argument("--head-epochs", type=int, default=None, metavar="N", help="head training epochs (default: 100)")
    g.add_argument("--heads", type=int, default=None, metavar="H", help="heads trained at once (default: 10)")


def head_options(args: argparse.Namespace) -> dict:
    """The `HeadConfig` fields the command line sets."""
    given = {"self_label": args.self_label or None, "entropy_weight": args.entropy_weight,
             "epochs": args.head_epochs, "n_heads": args.heads}
    return {key: value for key, value in given.items() if value is not None}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cluster",
        help="group a folder of images into k clusters",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="SOURCE", help="folder, .npz file, 'digits' or a known data set")
    p.add_argument("--k", type=_k_value, default=None, metavar="K",
                   help="number of clusters (>= 2), or auto (chosen in --k-range by the silhouette); "
                        "required unless --clusterer hdbscan")
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
    _add_clustering_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepclust.errors import DeepclustError
    from deepclust.pipeline import DEFAULT_PCA_DIM, DEFAULT_VOCAB, cluster_source

    if args.vocab and not args.namer:
        raise DeepclustError("--vocab only has an effect with --namer hf:<CLIP model>; add --namer or drop --vocab.")
    if args.k is None and args.clusterer != "hdbscan":
        raise DeepclustError("--k is required: a number of clusters (e.g. --k 10) or --k auto; only "
                             "--clusterer hdbscan finds the number of clusters without it.")
    if args.clusterer == "hdbscan" and args.k is not None:
        raise DeepclustError("--clusterer hdbscan finds the number of clusters itself: drop --k.")
    if (args.self_label or args.entropy_weight is not None) and args.head == "none":
        raise DeepclustError("--self-label and --entropy-weight train a clustering head: add --head scan.")

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
        clusterer=args.clusterer,
        head=args.head,
        head_options=head_options(args),
        reduce=args.reduce,
        reduce_dim=args.reduce_dim,
        k_range=args.k_range,
        min_cluster_size=args.min_cluster_size,
    )
    info = result.info
    print(result.summary, end="")
    print(f"{info['n_images']} images in {info['k']} clusters ({info['n_skipped']} skipped), "
          f"{info['features']} features, {info['seconds']:.1f} s")
    if info.get("k_choice"):
        c = info["k_choice"]
        print(f"k={c['k']} chosen by the {c['criterion']} over k = {c['k_range'][0]}..{c['k_range'][1]}")
    if info.get("clusterer") == "hdbscan":
        print(f"{info['n_noise']} images left as noise (cluster -1)")
    if info.get("cluster_head"):
        h = info["cluster_head"]
        purity = f", neighbour purity {h['neighbour_purity']:.3f}" if h.get("neighbour_purity") is not None else ""
        print(f"{h['kind']} head {h['best_head']} of {len(h['head_losses'])}: loss {h['loss']:.4f}{purity}")
    if result.metrics:
        m = result.metrics
        print(f"ACC {m['acc']:.3f}  NMI {m['nmi']:.3f}  ARI {m['ari']:.3f}  "
              f"(against {m['n_evaluated']} known labels)")
    for name in ("assignments", "metrics", "skipped", "report"):
        if name in result.files:
            print(f"{name:>11}: {result.files[name]}")
    return 0
