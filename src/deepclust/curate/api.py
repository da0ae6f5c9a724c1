"""`curate`: exact and near duplicates, decontamination, retrieval and balanced sampling of a source.

Stages, each on what the previous one kept (nothing in SOURCE is ever modified or deleted):

1. the model (`deepclust.features.load_model`, once) and the images (`load_images`, once);
   one embedding pass per source (`embed_store`, cached), SOURCE, ``against`` and ``seed``
   all through the same loaded model at SOURCE's working size;
2. embeddings are L2-normalised, after subtracting SOURCE's mean embedding for pixel
   features (``raw``/``pca``: all-positive pixel vectors would otherwise all look alike);
   cosine similarity is then their inner product;
3. ``against``: every SOURCE image whose nearest evaluation image has cosine >= threshold
   is removed ("contaminates");
4. exact duplicates (identical decoded pixels), then near duplicates (cosine >= threshold,
   connected components) among one image per exact group; per group the member whose path
   sorts first is kept (`deepclust.curate.dedup`);
5. ``seed``: only the ``per_query`` nearest remaining images to each seed image are kept;
6. ``target_size``: hierarchical k-means sampling (`deepclust.curate.sampling`);
7. the files (`deepclust.curate.files`): keep.csv, removed.csv, duplicates.csv,
   summary.json, curation.html.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from deepclust.curate.decontaminate import contaminated
from deepclust.curate.dedup import DEFAULT_NEIGHBORS, DuplicateGroup, exact_groups, near_groups
from deepclust.curate.retrieval import retrieve
from deepclust.curate.sampling import (
    DEFAULT_LEVELS,
    DEFAULT_RESAMPLE_STEPS,
    default_clusters,
    hierarchical_kmeans,
    hierarchical_sample,
)
from deepclust.curate.search import DEFAULT_EXACT_LIMIT, DEFAULT_NPROBE
from deepclust.errors import DeepclustError
from deepclust.features import LoadedModel, embed_store, load_model

log = logging.getLogger(__name__)

#: Features used when neither ``model`` nor ``features`` is given.
DEFAULT_FEATURES = "raw"
#: Default cosine-similarity thresholds per feature kind; learned models (runs, hf:...) use
#: "model". From benchmarks/bench_curate.py on 5,000 CIFAR-10 test images + 600 injected copies
#: (2026-12-01): the lowest swept value with pair precision >= 0.97 -- raw 0.97 (0.976; 0.93
#: gave 0.46), pca 0.90 (0.984). "model" is not measured yet. See docs/curation.md.
DEFAULT_THRESHOLDS = {"raw": 0.97, "pca": 0.90, "model": 0.95}
PIXEL_FEATURES = ("raw", "pca")
DEFAULT_PCA_DIM = 50


@dataclass
class Removal:
    """Why one image is not kept: ``kind`` in exact|near|contaminates|not_retrieved|not_sampled,
    the image it duplicates / contaminates (a path, or "") and the similarity (or None)."""

    kind: str
    other: str = ""
    similarity: float | None = None

    @property
    def reason(self) -> str:
        sim = "" if self.similarity is None else f" ({self.similarity:.4f})"
        return {"exact": f"exact duplicate of {self.other}",
                "near": f"near duplicate of {self.other}{sim}",
                "contaminates": f"contaminates {self.other}{sim}",
                "not_retrieved": "not retrieved",
                "not_sampled": "not sampled"}[self.kind]


@dataclass
class CurationResult:
    """What `curate` decided; the same content is in the files under ``out_dir``."""

    paths: list[str]                  # every usable SOURCE image, store order
    keep: np.ndarray                  # indices into paths, increasing
    removed: dict[int, Removal]       # index -> why it was removed
    groups: list[DuplicateGroup]      # exact groups, then near groups
    summary: dict[str, Any]           # the content of summary.json
    out_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    balance: dict[str, list[int]] | None = None  # top-level cluster sizes before/after sampling

    @property
    def kept_paths(self) -> list[str]:
        return [self.paths[i] for i in self.keep]


def check_options(threshold: float | None, per_query: int, target_size: int | None, levels: int,
                  **counts: int) -> None:
    """Fail on bad options before anything is loaded (``counts``: other whole numbers >= 0)."""
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 < float(threshold) <= 1.0):
        raise DeepclustError(f"threshold {threshold!r} is not a cosine similarity in (0, 1] (e.g. --threshold 0.95)")
    for name, value in (("per_query", per_query), ("levels", levels)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise DeepclustError(f"{name} must be a positive whole number, got {value!r}")
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise DeepclustError(f"{name} must be a whole number >= 0, got {value!r}")
    if target_size is not None and (isinstance(target_size, bool) or not isinstance(target_size, (int, np.integer))
                                    or target_size < 1):
        raise DeepclustError(f"target size must be a positive whole number of images, got {target_size!r}")


def _load(model: Any, features: str | None, device: str, image_size: int | None,
          pca_dim: int = DEFAULT_PCA_DIM) -> LoadedModel:
    spec = model if model is not None else (features or DEFAULT_FEATURES)
    if isinstance(spec, LoadedModel):
        return spec
    try:
        return load_model(spec, device=device, image_size=image_size, pca_dim=pca_dim)
    except DeepclustError:
        raise
    except Exception as exc:  # a broken checkpoint or folder: say which, never a traceback
        raise DeepclustError(f"the model {spec!r} cannot be loaded: {type(exc).__name__}: {exc}") from exc


class _Embedder:
    """One loaded model; SOURCE first (fits PCA, gives the mean), then other stores alike."""

    def __init__(self, loaded: LoadedModel, batch_size: int, progress: bool):
        self.loaded, self.batch_size, self.progress = loaded, batch_size, progress
        self.mean: np.ndarray | None = None
        self.source: Any = None

    def __call__(self, store: Any) -> np.ndarray:
        from deepclust.models.encoder import PCAEncoder

        encoder = self.loaded.encoder
        first = self.mean is None
        if first:
            self.source = store  # embed_store fits a PCA on it on a cache miss
        elif isinstance(encoder, PCAEncoder) and not encoder.fitted:  # SOURCE came from the cache
            encoder.fit(np.asarray(self.source.images), batch_size=self.batch_size)
        # A cached PCA embedding of another store may come from a PCA fitted on that store.
        cache = first or not isinstance(encoder, PCAEncoder)
        x = embed_store(self.loaded, store, batch_size=self.batch_size, cache=cache,
                        progress=self.progress).features
        if first:
            self.mean = (x.mean(axis=0, keepdims=True) if not self.loaded.spherical
                         else np.zeros((1, x.shape[1]), dtype=np.float32))
        x = np.array(x, dtype=np.float32, order="C")  # one copy, centred and scaled in place
        x -= self.mean
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return x


def default_threshold(loaded: LoadedModel) -> float:
    return DEFAULT_THRESHOLDS.get(loaded.kind, DEFAULT_THRESHOLDS["model"])


def _load_other(spec: str, size: int, progress: bool) -> Any:
    from deepclust.data.store import load_images

    return load_images(spec, size=size, progress=progress)


def _dedup(store: Any, x: np.ndarray, threshold: float, removed: dict[int, Removal], neighbors: int,
           search_options: dict[str, Any]) -> tuple[list[DuplicateGroup], str]:
    """Exact then near groups; members other than the kept one are removed (unless already)."""
    paths = store.paths
    exact = exact_groups(store.images, paths, progress=search_options["progress"])
    in_exact = {m for g in exact for m in g.members[1:]}
    representatives = np.asarray([i for i in range(len(paths)) if i not in in_exact], dtype=np.int64)
    near, description = near_groups(x, paths, threshold, candidates=representatives, neighbors=neighbors,
                                    **search_options)
    for group in exact + near:
        for member, sim in zip(group.members[1:], group.similarity[1:]):
            removed.setdefault(member, Removal(group.kind, paths[group.kept],
                                               None if group.kind == "exact" else sim))
    return exact + near, description


def _sample(x: np.ndarray, alive: np.ndarray, target: int, removed: dict[int, Removal], *, levels: int,
            clusters: list[int] | None, resample_steps: int, seed: int) -> tuple[dict[str, list[int]], list[int]]:
    if target > len(alive):
        advice = f"use --target-size {len(alive)} or fewer" if len(alive) else "nothing is left to sample"
        raise DeepclustError(f"target size {target} is larger than the {len(alive)} images left after the "
                             f"earlier steps (decontamination, duplicates, retrieval): {advice}")
    ks = list(clusters) if clusters else default_clusters(len(alive), levels)
    hierarchy = hierarchical_kmeans(x[alive], ks, resample_steps=resample_steps, seed=seed)
    picked = hierarchical_sample(x[alive], hierarchy, target)
    top = hierarchy.top_labels()
    k_top = len(hierarchy.centroids[-1])
    chosen = np.zeros(len(alive), dtype=bool)
    chosen[picked] = True
    for i in alive[~chosen]:
        removed[int(i)] = Removal("not_sampled")
    balance = {"before": np.bincount(top, minlength=k_top).tolist(),
               "after": np.bincount(top[picked], minlength=k_top).tolist()}
    return balance, ks


def curate(
    source: str | Any,
    *,
    out_dir: str | Path,
    model: str | nn.Module | LoadedModel | None = None,
    features: str | None = None,
    size: int | None = None,
    pca_dim: int = DEFAULT_PCA_DIM,
    threshold: float | None = None,
    against: str | None = None,
    seed_source: str | None = None,
    per_query: int = 4,
    target_size: int | None = None,
    levels: int = DEFAULT_LEVELS,
    clusters: list[int] | None = None,
    resample_steps: int = DEFAULT_RESAMPLE_STEPS,
    neighbors: int = DEFAULT_NEIGHBORS,
    exact_limit: int = DEFAULT_EXACT_LIMIT,
    nprobe: int = DEFAULT_NPROBE,
    seed: int = 0,
    device: str = "auto",
    batch_size: int = 256,
    report: bool = True,
    progress: bool = True,
) -> CurationResult:
    """Curate ``source`` (a folder, .npz, known name, or an `ImageStore`) into ``out_dir``.

    ``model`` (a run directory, ``hf:<id>``, a Hugging Face folder, a module) takes precedence
    over ``features`` (``raw``, the default, or ``pca`` with ``pca_dim`` dimensions). ``threshold``
    is an absolute cosine similarity in (0, 1]: pairs at or above it are near duplicates
    (default per feature kind, `DEFAULT_THRESHOLDS`). ``against``: an evaluation source to decontaminate from.
    ``seed_source`` + ``per_query``: retrieval around a curated seed set. ``target_size``:
    hierarchical k-means sampling with ``levels`` levels of ``clusters`` clusters (default
    `default_clusters`). See the module doc for the order of the stages and docs/curation.md.

    Raises:
        DeepclustError: bad options, an empty source, a model that cannot be loaded, a target
        size larger than what is left.
    """
    from deepclust.curate.files import write_curation

    start = time.perf_counter()
    check_options(threshold, per_query, target_size, levels, resample_steps=resample_steps,
                  neighbors=neighbors - 1, exact_limit=exact_limit, nprobe=nprobe - 1)
    loaded, store = _open(source, model, features, size, pca_dim, device, progress)
    if target_size is not None and target_size > len(store):
        raise DeepclustError(f"target size {target_size} is larger than the source ({len(store)} usable images)")
    embed = _Embedder(loaded, batch_size, progress)
    x = embed(store)
    thr = float(threshold) if threshold is not None else default_threshold(loaded)
    search_options: dict[str, Any] = dict(exact_limit=exact_limit, nprobe=nprobe, progress=progress)
    removed: dict[int, Removal] = {}
    index: dict[str, str] = {}
    if against is not None:
        other = _load_other(against, store.size, progress)
        hits = contaminated(x, embed(other), thr, **search_options)
        for i, j, s in zip(hits.source.tolist(), hits.other.tolist(), hits.similarity.tolist()):
            removed[i] = Removal("contaminates", other.paths[j], float(s))
        index["against"] = hits.index
    groups, index["near_duplicates"] = _dedup(store, x, thr, removed, neighbors, search_options)
    if seed_source is not None:
        alive = _alive(len(store), removed)
        found = retrieve(x, embed(_load_other(seed_source, store.size, progress)), per_query,
                         candidates=alive, **search_options)
        for i in np.setdiff1d(alive, found.source).tolist():
            removed[i] = Removal("not_retrieved")
        index["retrieval"] = found.index
    balance, ks = None, None
    if target_size is not None:
        balance, ks = _sample(x, _alive(len(store), removed), int(target_size), removed, levels=levels,
                              clusters=clusters, resample_steps=resample_steps, seed=seed)
    keep = _alive(len(store), removed)
    summary = _summary(store, loaded, thr, keep, removed, groups, index, x.shape[1], ks, start,
                       dict(against=against, seed=seed_source, per_query=per_query if seed_source else None,
                            target_size=target_size, neighbors=neighbors, resample_steps=resample_steps,
                            random_seed=seed))
    result = CurationResult(list(store.paths), keep, removed, groups, summary, Path(out_dir), balance=balance)
    result.files = write_curation(result, store, report=report, progress=progress)
    return result


def _alive(n: int, removed: dict[int, Removal]) -> np.ndarray:
    return np.asarray([i for i in range(n) if i not in removed], dtype=np.int64)


def _open(source: Any, model: Any, features: str | None, size: int | None, pca_dim: int, device: str,
          progress: bool) -> tuple[LoadedModel, Any]:
    """The model (before decoding, so a bad one fails in seconds) and the store."""
    from deepclust.data.store import load_images
    from deepclust.features.load import DEFAULT_MAX_SIZE

    if isinstance(model, str) and model in PIXEL_FEATURES:
        features, model = model, None
    if features is not None and features not in PIXEL_FEATURES:
        raise DeepclustError(f"features must be raw or pca (or give a model), got {features!r}")
    loaded = _load(model, None, device, None) if model is not None else None
    if size is None and loaded is not None:
        size = loaded.image_size
    store = source if hasattr(source, "images") else load_images(
        source, size=size, max_size=loaded.max_size if loaded else DEFAULT_MAX_SIZE, progress=progress)
    if loaded is None:
        loaded = _load(None, features, device, store.size, pca_dim)
    return loaded, store


def _summary(store: Any, loaded: LoadedModel, threshold: float, keep: np.ndarray, removed: dict[int, Removal],
             groups: list[DuplicateGroup], index: dict[str, str], dim: int, clusters: list[int] | None,
             start: float, options: dict) -> dict[str, Any]:
    kinds = [r.kind for r in removed.values()]
    return {
        "source_id": str(getattr(store, "source_id", "")), "n_images": len(store), "n_skipped": len(store.skipped),
        "n_kept": int(len(keep)), "n_removed": len(removed),
        "removed": {k: kinds.count(k) for k in ("exact", "near", "contaminates", "not_retrieved", "not_sampled")},
        "exact_groups": sum(g.kind == "exact" for g in groups), "near_groups": sum(g.kind == "near" for g in groups),
        "features": loaded.spec, "feature_kind": loaded.kind, "model_identity": loaded.identity,
        "embed_dim": int(dim),
        "centred": not loaded.spherical, "threshold": threshold, "index": index,
        "clusters_per_level": clusters, **options, "seconds": round(time.perf_counter() - start, 3),
    }


__all__ = ["curate", "CurationResult", "Removal", "DEFAULT_FEATURES", "DEFAULT_THRESHOLDS", "check_options"]
