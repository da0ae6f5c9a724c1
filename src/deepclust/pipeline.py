"""Cluster a source of images end to end: load model -> load images -> embed -> cluster -> write.

This is the library function behind ``deepclust cluster``, ``deepclust train`` (its final
clustering), ``deepclust demo`` and ``DeepClusterer(model=...)``; the commands only parse
arguments and print. Each stage is one call:

1. `deepclust.features.load_model` -- the model, loaded once (eager attention from the start
   when attention maps are asked for); a run gives its working size and whitening;
2. `deepclust.data.store.load_images` -- the images, decoded once;
3. `deepclust.features.embed_store` -- one embedding pass (cached on disk);
4. `deepclust.cluster.cluster_embeddings` -- the one clustering function;
5. names (`deepclust.naming`: the model's own embeddings when the namer is the same CLIP, else
   one pass of the namer) and attention maps (the loaded encoder itself);
6. `deepclust.output.write_clustering` -- the one writer (see `deepclust.output` for the files).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deepclust.core.outdir import output_lock
from deepclust.errors import DeepclustError
from deepclust.features import LoadedModel, embed_store, load_model
from deepclust.output import clustering_metrics_info, format_summary, known_labels, write_clustering

log = logging.getLogger(__name__)

#: Feature kinds computed from pixels alone; anything else (a run dir, ``hf:...``) is learned.
PIXEL_FEATURES = ("raw", "pca")
DEFAULT_PCA_DIM = 50
#: Built-in vocabulary used to name clusters when only a namer is given.
DEFAULT_VOCAB = "common"

Names = dict[int, list[tuple[str, float]]]


@dataclass
class ClusterResult:
    """What `cluster_store` produced; the same numbers are in the files under `out_dir`."""

    labels: np.ndarray                    # (N,) int64 cluster id per usable image
    metrics: dict | None                  # acc/nmi/ari... when true labels are known, else None
    paths: list[str]                      # (N,) path of each clustered image, same order as labels
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)  # "assignments", "metrics", ... -> path
    summary: str = ""                     # the text of summary.txt
    info: dict = field(default_factory=dict)  # the full content of metrics.json
    cluster_names: Names | None = None    # CLIP names, best first
    clustering: Any = None                # the `deepclust.cluster.Clustering`
    embeddings: np.ndarray | None = None  # (N, D) model embeddings


def check_k(k: int, n_images: int | None = None) -> int:
    """Validate the number of clusters before (and, with `n_images`, after) loading."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise DeepclustError(f"k must be a whole number of clusters, got {k!r}.")
    if k < 2:
        raise DeepclustError(f"k={k}: the number of clusters must be at least 2 (e.g. --k 10).")
    if n_images is not None and n_images < 2:
        raise DeepclustError(f"only {n_images} usable image(s) were found: clustering needs at least 2 "
                             "(and k between 2 and the number of images); add images.")
    if n_images is not None and k > n_images:
        raise DeepclustError(
            f"k={k} clusters requested but only {n_images} usable image(s) were found; "
            f"use --k {n_images} or fewer (at least 2), or add images."
        )
    return int(k)


def check_k_spec(k: int | str | None, n_images: int | None = None) -> int | str | None:
    """`check_k`, letting through ``"auto"`` (--k auto: the silhouette chooses) and None
    (HDBSCAN finds the number itself; `cluster_embeddings` says when that does not apply)."""
    if k is None or k == "auto":
        return k
    if isinstance(k, str):
        raise DeepclustError(f"k must be a whole number of clusters or 'auto', got {k!r} (e.g. --k 10, --k auto).")
    return check_k(k, n_images)


def cluster_source(source: str, *, k: int | str | None, out_dir: str | Path, features: str = "raw",
                   model: str | nn.Module | LoadedModel | None = None, size: int | None = None,
                   namer: str | None = None, attention: bool = False, device: str = "auto",
                   progress: bool = True, trust_custom_code: bool = False, **options: Any) -> ClusterResult:
    """Load `source` (folder, ``.npz``, ``digits``, known set) and cluster it into `k` groups.

    `model` (a run directory, ``hf:<id>``, a Hugging Face folder, a module) takes precedence
    over `features` (``raw`` or ``pca``); it is loaded before the images are decoded, so a
    missing model fails in seconds, and a run's working size is used when `size` is None.
    `trust_custom_code` lets a run whose method is ``module:factory`` import that module.
    The output folder is checked (and locked) before anything is loaded or decoded.
    The other keyword arguments are those of `cluster_store`.
    """
    from deepclust.core.device import resolve_device
    from deepclust.data.store import load_images
    from deepclust.features.load import DEFAULT_MAX_SIZE

    check_k_spec(k)  # fail before minutes of decoding, not after
    if options.get("reduce") == "umap":
        from deepclust.cluster.reduce import require_umap

        require_umap()
    resolve_device(device)
    if isinstance(model, str) and model in PIXEL_FEATURES:
        features, model = model, None  # `--model raw` means the pixel features
    if attention and not model:
        raise DeepclustError("attention maps need a ViT model: pass --model hf:<id> or a run trained "
                             "with a vit_* backbone (raw/pca features have no attention)")
    with output_lock(out_dir):
        loaded = _load(model, device, attention, trust_custom_code) if model is not None else None
        namer_model = _load_namer(namer, model, loaded, device)
        if size is None and loaded is not None:
            size = loaded.image_size
        store = load_images(source, size=size, max_size=loaded.max_size if loaded else DEFAULT_MAX_SIZE,
                            progress=progress)
        return cluster_store(store, k=k, out_dir=out_dir, features=features, model=loaded if loaded else None,
                             namer=namer_model, attention=attention, device=device, progress=progress, **options)


def _load(model: str | nn.Module | LoadedModel, device: str, attention: bool,
          trust_custom_code: bool = False) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    return load_model(model, device=device, attentions=attention, trust_custom_code=trust_custom_code)


def _load_namer(namer: Any, model: Any, loaded: LoadedModel | None, device: str) -> Any:
    """The namer's CLIP encoder: the model itself when it is the same spec, else loaded once."""
    if namer is None or not isinstance(namer, str):
        return namer
    from deepclust.models.pretrained import require_clip

    if loaded is not None and _same_model(namer, loaded):
        require_clip(loaded.encoder, namer)  # fail now, not after the clustering
        return loaded
    return require_clip(load_model(namer, device=device).encoder, namer)


def _same_model(spec: str, loaded: LoadedModel) -> bool:
    """``spec`` names the files ``loaded`` came from (``hf:DIR`` and ``DIR`` are the same model)."""
    if spec == loaded.spec:
        return True
    model_dir = getattr(loaded.encoder, "model_dir", None)
    if loaded.kind != "hf" or model_dir is None:
        return False
    from deepclust.models.pretrained import resolve_model_dir

    try:
        return resolve_model_dir(spec).resolve() == Path(model_dir).resolve()
    except DeepclustError:
        return False


def cluster_store(
    store: Any,
    *,
    k: int | str | None,
    out_dir: str | Path,
    features: str = "raw",
    model: str | nn.Module | LoadedModel | None = None,
    seed: int = 0,
    n_init: int = 10,
    spherical: bool | None = None,
    balanced: bool = False,
    pca_dim: int = DEFAULT_PCA_DIM,
    whiten_dim: int | None = None,
    device: str = "auto",
    report: bool = True,
    namer: Any = None,
    vocab: Any = DEFAULT_VOCAB,
    attention: bool = False,
    progress: bool = True,
    title: str | None = None,
    run_dir: str | Path | None = None,
    batch_size: int = 256,
    trust_custom_code: bool = False,
    clusterer: str = "kmeans",
    head: str | None = "auto",
    head_options: Mapping[str, Any] | None = None,
    reduce: str | None = None,
    reduce_dim: int | None = None,
    k_range: str | Sequence[int] | None = None,
    min_cluster_size: int | None = None,
) -> ClusterResult:
    """Cluster an already loaded `ImageStore` and write the files into `out_dir`.

    `spherical=None` and `whiten_dim=None` take the encoder's defaults (cosine k-means for
    learned embeddings, Euclidean for pixels; a run's ``cluster_whiten_dim``). `namer` is a
    CLIP spec, a `ClipEncoder` or the `LoadedModel` of the model itself; it names each cluster
    with the best entries of `vocab` (built-in name, text file or ``"a,b,c"``). `attention`
    adds each cluster's ViT attention maps to the report. `run_dir` (default: the model's, when
    it is a run) feeds the report's training curves. `out_dir` is checked and locked first.
    `k` may be ``"auto"`` (chosen in `k_range` by the silhouette) or None with
    ``clusterer="hdbscan"``; `head` (``scan`` / ``temi``, options in `head_options`; ``"auto"``:
    a run's recipe ``cluster_head`` when k is a number and neither HDBSCAN nor `balanced` is
    asked for, else none; None or ``"none"``: k-means alone),
    `reduce` (``pca`` / ``umap``), `reduce_dim` and `min_cluster_size` are those of
    `deepclust.cluster.cluster_embeddings` (see docs/heads.md).
    """
    options = dict(clusterer=clusterer, head=head, head_options=head_options, reduce=reduce,
                   reduce_dim=reduce_dim, k_range=k_range, min_cluster_size=min_cluster_size)
    with output_lock(out_dir):
        return _cluster_store(store, k=k, out_dir=out_dir, features=features, model=model, seed=seed,
                              n_init=n_init, spherical=spherical, balanced=balanced, pca_dim=pca_dim,
                              whiten_dim=whiten_dim, device=device, report=report, namer=namer, vocab=vocab,
                              attention=attention, progress=progress, title=title, run_dir=run_dir,
                              batch_size=batch_size, trust_custom_code=trust_custom_code, options=options)


def _cluster_store(store: Any, *, k: int | str | None, out_dir: str | Path, features: str, model: Any, seed: int,
                   n_init: int, spherical: bool | None, balanced: bool, pca_dim: int, whiten_dim: int | None,
                   device: str, report: bool, namer: Any, vocab: Any, attention: bool, progress: bool,
                   title: str | None, run_dir: str | Path | None, batch_size: int,
                   trust_custom_code: bool, options: dict[str, Any]) -> ClusterResult:
    from deepclust.cluster import cluster_embeddings

    start = time.perf_counter()
    n_images = len(store.paths)
    k = check_k_spec(k, n_images)
    if model is not None and features != "raw":
        log.info("--model %s is used; --features %s is ignored", model, features)
    if model is None and features == "pca" and pca_dim >= n_images:
        pca_dim = max(1, n_images - 1)  # PCA cannot have more components than samples
    loaded = model if isinstance(model, LoadedModel) else load_model(
        model if model is not None else features, device=device, attentions=attention,
        image_size=int(store.images.shape[1]), pca_dim=pca_dim, seed=seed, trust_custom_code=trust_custom_code)
    if attention and not loaded.encoder.has_attention:
        raise DeepclustError(no_attention_message(loaded))
    options["head"] = default_head(options["head"], loaded, k, balanced=balanced, clusterer=options["clusterer"])
    head_options = {"device": device, "progress": progress, **run_head_options(options["head"], loaded),
                    **(options.pop("head_options") or {})}
    if options["head"] is None and (head_options.get("self_label") or head_options.get("entropy_weight") is not None):
        raise DeepclustError("self_label and entropy_weight train a clustering head: ask for head='scan' "
                             "(--head scan).")
    log.info("features: %s on %d images", loaded.spec, n_images)
    embedded = embed_store(loaded, store, batch_size=batch_size, progress=progress)
    x = embedded.features
    spherical = loaded.spherical if spherical is None else bool(spherical)
    whiten_dim = loaded.whiten_dim if whiten_dim is None else int(whiten_dim)
    if isinstance(k, int):
        n_init = _check_duplicates(x, k, n_init)
    log.info("%s: k=%s, n_init=%d, %s%s", _what(options), k, n_init,
             "cosine" if spherical or whiten_dim else "euclidean",
             f", whitened to {whiten_dim} dims" if whiten_dim else "")
    clustering = cluster_embeddings(x, k, spherical=spherical, whiten_dim=whiten_dim, n_init=n_init,
                                    seed=seed, balanced=balanced, head_options=head_options,
                                    labels_true=known_labels(store), **options)
    kmeans_done = time.perf_counter()
    labels = clustering.labels
    names = _names(namer, loaded, store, labels, x, vocab, progress)
    extras = None
    if attention and report:
        from deepclust.attention import cluster_attention_extras

        log.info("attention maps of a few images per cluster (%s)", loaded.spec)
        extras = cluster_attention_extras(store.images, labels, loaded.encoder)
    info = clustering_metrics_info(store, clustering, features=x, spec=loaded.spec, logits=embedded.logits,
                                   config=loaded.config, seed=seed, n_init=n_init,
                                   seconds={"features": embedded.seconds,
                                            "kmeans": kmeans_done - start - embedded.seconds})
    if names:
        info.update(namer=getattr(namer, "spec", None) or getattr(namer, "name", str(namer)),
                    vocab=vocab if isinstance(vocab, str) else list(vocab),
                    cluster_names={str(c): [[name, round(float(score), 4)] for name, score in ranked]
                                   for c, ranked in sorted(names.items())})
    if run_dir is None and loaded.kind == "run":
        run_dir = loaded.spec
    info["seconds"] = round(time.perf_counter() - start, 3)
    files = write_clustering(out_dir, store, labels, info=info, embeddings=x, cluster_names=names,
                             report=report, run_dir=run_dir, cluster_extras=extras,
                             title=title or f"deepclust: {loaded.spec} features, k={clustering.k}",
                             progress=progress)
    metrics = {key: info[key] for key in ("acc", "acc_many_to_one", "nmi", "ari", "n_clusters_used",
                                          "n_evaluated") if key in info} or None
    summary = format_summary(labels, known_labels(store), getattr(store, "class_names", None), names)
    return ClusterResult(labels=labels, metrics=metrics, paths=list(store.paths), out_dir=Path(out_dir),
                         files=files, summary=summary, info=info, cluster_names=names,
                         clustering=clustering, embeddings=x)


def default_head(head: str | None, loaded: LoadedModel, k: int | str | None, *, balanced: bool = False,
                 clusterer: str = "kmeans") -> str | None:
    """The clustering head to train: `head` as given (None / ``"none"``: k-means alone), or for
    ``"auto"`` the run's recipe setting (``TrainConfig.cluster_head``) where it applies -- k a
    number, k-means (not HDBSCAN), not `balanced`, which all re-assign labels their own way."""
    if head != "auto":
        return None if head in (None, "none") else head
    recipe = getattr(loaded.config, "cluster_head", "none") if loaded.kind == "run" else "none"
    if recipe == "none" or not isinstance(k, int) or balanced or clusterer != "kmeans":
        return None
    return str(recipe)


def run_head_options(head: str | None, loaded: LoadedModel) -> dict[str, Any]:
    """A run's ``cluster_head_kwargs`` when `head` is the run's own ``cluster_head`` (so
    ``--head scan`` on a SCAN run is its default clustering), else none; options given with
    the call override them."""
    cfg = loaded.config if loaded.kind == "run" else None
    if head is None or cfg is None or getattr(cfg, "cluster_head", "none") != head:
        return {}
    return dict(getattr(cfg, "cluster_head_kwargs", None) or {})


def _what(options: Mapping[str, Any]) -> str:
    """How the clustering is done, for the log: ``reduce -> k-means/HDBSCAN/head``."""
    what = f"{options['head']} head" if options.get("head") else str(options.get("clusterer") or "kmeans")
    return f"{options['reduce']} -> {what}" if options.get("reduce") else what


def count_distinct_rows(x: np.ndarray) -> int:
    """Number of distinct rows of ``x`` (exact bytes; a hash per row, O(N D))."""
    import hashlib

    rows = np.ascontiguousarray(x)
    return len({hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in rows})


def _check_duplicates(x: np.ndarray, k: int, n_init: int) -> int:
    """Warn about identical images (they always share a cluster); with at most k distinct
    rows k-means has nothing to search, so one restart is enough (n_init -> 1)."""
    distinct = count_distinct_rows(x)
    if distinct <= k:
        log.warning("only %d distinct image(s) among %d: identical images always share a cluster, so at most "
                    "%d of the k=%d clusters are used", distinct, len(x), distinct, k)
        return 1
    if distinct < len(x):
        log.warning("%d of %d images are exact duplicates of others: each group of identical images is kept "
                    "in one cluster", len(x) - distinct, len(x))
    return n_init


def no_attention_message(loaded: LoadedModel) -> str:
    """Why a model has no attention maps, naming the real reason (e.g. a CNN backbone)."""
    cfg = loaded.config
    backbone = getattr(cfg, "backbone", None) if cfg is not None and ":" not in cfg.method else None
    if backbone is not None and not str(backbone).startswith("vit"):
        return (f"{loaded.spec} has no self-attention: its backbone {backbone!r} is a CNN, not a ViT; attention "
                "maps need a run trained with a vit_* backbone, or hf:facebook/dinov2-* / hf:openai/clip-*")
    return (f"{loaded.spec} has no self-attention: attention maps need a ViT model "
            "(hf:facebook/dinov2-*, hf:openai/clip-*, or a run trained with a vit_* backbone)")


def _names(namer: Any, loaded: LoadedModel, store: Any, labels: np.ndarray, x: np.ndarray,
           vocab: Any, progress: bool) -> Names | None:
    """CLIP names per cluster; the clustering's own embeddings when the namer is the model."""
    if namer is None:
        return None
    from deepclust.models.pretrained import require_clip
    from deepclust.naming import name_clusters

    if isinstance(namer, str):
        namer = loaded if _same_model(namer, loaded) else load_model(namer)
    reuse = namer is loaded or namer is loaded.encoder
    encoder = namer.encoder if isinstance(namer, LoadedModel) else namer
    clip = require_clip(encoder, str(getattr(namer, "spec", None) or getattr(encoder, "name", encoder)))
    log.info("naming clusters with %s (vocabulary: %s)", clip.name, vocab)
    if reuse and getattr(clip, "pooling", None) == "cls":  # a CLIP's (or image-text run's) joint-space embeddings
        return name_clusters(clip, store.images, labels, vocab, top_n=3, image_embeds=x, progress=progress)
    return name_clusters(clip, store.images, labels, vocab, top_n=3, progress=progress)


__all__ = ["ClusterResult", "cluster_source", "cluster_store", "check_k", "check_k_spec", "default_head",
           "run_head_options", "format_summary", "PIXEL_FEATURES", "DEFAULT_PCA_DIM", "DEFAULT_VOCAB"]
