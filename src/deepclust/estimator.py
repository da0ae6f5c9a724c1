"""``DeepClusterer``: a thin scikit-learn front over deepclust's stages.

    >>> from deepclust.estimator import DeepClusterer
    >>> model = DeepClusterer(method="dino", k=10, config="digits_dino").fit(images)
    >>> model.labels_, model.predict(new_images), model.transform(new_images)
    >>> DeepClusterer(model="hf:facebook/dinov2-small", k=20).fit_predict("photos/")

``fit`` trains with the one training loop (`deepclust.train.loop.train`, exactly what
``deepclust train`` runs), then clusters with the pipeline of ``deepclust cluster --model RUN``
(`deepclust.pipeline.cluster_store`: the encoder's embeddings, `cluster_embeddings` with the
run's whitening, the same metrics): the same run gives the same labels and ``metrics_``.
With ``model=`` (a run directory, ``hf:<id>``, a Hugging Face folder, ``raw``, ``pca`` or an
``nn.Module``) nothing is trained. ``predict`` is `Clustering.predict` on the encoder's
embeddings of images of the size the model was fitted on.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

from deepclust.cluster.whiten import Whitener
from deepclust.errors import DataError, DeepclustError

log = logging.getLogger(__name__)


@dataclass
class _ArrayStore:
    """The part of an ImageStore that training and the writer read (no cache: no source_id)."""

    images: np.ndarray
    labels: np.ndarray | None = None
    class_names: list[str] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source_id: str | None = None

    @property
    def paths(self) -> list[str]:
        return [f"array#{i}" for i in range(len(self.images))]


def check_images(x: Any, name: str = "x") -> np.ndarray:
    """Validate an image array and convert it to the contract's ``uint8 (N, S, S, 3)``.

    Accepts ``(N, H, W)`` (grey), ``(N, H, W, 1)`` or ``(N, H, W, 3)``; ``uint8`` values, or
    floats in ``[0, 1]``. Images must be square (resize or crop them first).
    """
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not isinstance(x, np.ndarray):
        raise DataError(f"{name} must be a numpy array of images, an ImageStore or a source spec "
                        f"string (folder, .npz, 'digits'), got {type(x).__name__}")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3):
        raise DataError(f"{name} must have shape (N, H, W), (N, H, W, 1) or (N, H, W, 3); got {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{name} holds no images")
    if x.shape[1] != x.shape[2]:
        raise DataError(f"{name} images must be square, got {x.shape[1]}x{x.shape[2]}; "
                        "resize or centre-crop them (or pass a folder spec, which does that)")
    if x.dtype == np.uint8:
        out = x
    elif np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer):
        if not np.all(np.isfinite(x)):
            raise DataError(f"{name} contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if np.issubdtype(x.dtype, np.floating):
            if lo < 0 or hi > 1:
                raise DataError(f"float {name} must hold values in [0, 1], got [{lo:g}, {hi:g}]; "
                                "divide by 255 or pass uint8")
            out = np.round(x * 255.0).astype(np.uint8)
        else:
            if lo < 0 or hi > 255:
                raise DataError(f"integer {name} must hold values in [0, 255], got [{lo}, {hi}]")
            out = x.astype(np.uint8)
    else:
        raise DataError(f"{name} must be uint8 or float in [0, 1], got dtype {x.dtype}")
    if out.shape[3] == 1:
        out = np.repeat(out, 3, axis=3)
    return np.ascontiguousarray(out)


def _small_image_recipe(method: str, image_size: int) -> str | None:
    """``digits_<method>`` for images of at most 32 px when that recipe exists, else None."""
    from deepclust.train.config import resolve_config_path

    if image_size > 32 or ":" in method:
        return None
    try:
        resolve_config_path(f"digits_{method}")
    except DeepclustError:
        return None
    return f"digits_{method}"


class DeepClusterer(ClusterMixin, BaseEstimator):
    """Train ``method`` on images (or take an existing ``model``), then cluster them into ``k``.

    Args:
        method: deepcluster | swav | dino (ignored with ``model``).
        k: number of clusters; ``"auto"``: chosen in ``k_range`` (e.g. ``"2:30"``) by the
            silhouette (training keeps the recipe's k); None with ``clusterer="hdbscan"``.
        backbone: see ``deepclust.models.backbones.BACKBONE_NAMES``.
        model: cluster with this encoder instead of training one: a run directory,
            ``hf:<id or dir>``, a Hugging Face folder, ``raw``, ``pca`` or an ``nn.Module``.
        epochs, batch_size, lr: override the recipe's values when given.
        time_budget: train for this long (``"90s"``, ``"10m"``, ``"1h"``): epochs and steps sized from
            the measured speed, every schedule stretched to end in time (`deepclust.train.budget`).
        config: a recipe name (``"digits_dino"``), a YAML path, or a dict of
            ``TrainConfig`` fields; the arguments above take precedence over it. None: for
            small images (at most 32 px) the CPU-sized ``digits_<method>`` recipe when there is
            one (what ``deepclust train --config digits_dino`` runs: about a minute on
            digits instead of many with the generic defaults), else the defaults.
        device: auto | cpu | cuda | cuda:N | mps (checked: an unknown or absent device is an error).
        trust_custom_code: allow a ``package.module:factory`` method (or a run made with one)
            to be imported; off, such a method is refused.
        random_state: seed of training and k-means.
        out_dir: where the run (checkpoints, log.csv, and the clustering files of
            ``deepclust train``) is written; a temporary folder removed after ``fit`` when None.
        verbose: progress bars.
        whiten_dim: PCA-whitening dimension before k-means; "auto": the encoder's (a run's
            recipe ``cluster_whiten_dim``: 24 in digits_swav and digits_dino, none for
            DeepCluster); None or 0: none.
        spherical: cosine k-means; None: the encoder's default (learned: yes, pixels: no).
        n_init, balanced: k-means restarts; near-equal cluster sizes.
        method_kwargs: the method's hyper-parameters (merged over the recipe's).
        clusterer, min_cluster_size: ``"kmeans"`` or ``"hdbscan"`` (noise label -1).
        head, self_label, entropy_weight, head_epochs: clustering heads on the embeddings
            (``"scan"`` / ``"temi"``, see docs/heads.md; "auto": a run's recipe ``cluster_head``,
            as ``deepclust cluster --model RUN``; None or "none": k-means alone);
            reduce, reduce_dim: ``"pca"`` / ``"umap"``.
        init: start the backbone from this model (``hf:<id>``, a Hugging Face DINOv2 / CLIP
            folder, or a run directory), as ``deepclust train --init`` (docs/domain_adaptation.md);
            init_lr_scale, layer_decay, freeze_blocks, init_head_warmup_steps: its adaptation
            knobs (None: the --init defaults).

    Attributes after ``fit``: ``labels_ (N,)``, ``cluster_centers_ (k, d)`` (in the clustering
    space), ``clustering_`` (the `Clustering`), ``embeddings_ (N, D)`` (the encoder's
    embeddings, L2-normalised when clustered on the sphere), ``metrics_`` (what
    ``metrics.json`` holds), ``encoder_``, ``method_`` (the trained ``Method`` or None),
    ``config_`` (its ``TrainConfig`` or None), ``run_dir_`` (None for a temporary run),
    ``image_size_``.
    """

    def __init__(self, method: str = "dino", k: int = 10, backbone: str | None = None, *,
                 model: Any = None, epochs: int | None = None, batch_size: int | None = None,
                 lr: float | None = None, config: str | Path | dict | None = None, device: str = "auto",
                 time_budget: str | None = None,
                 random_state: int = 0, out_dir: str | Path | None = None, verbose: bool = True,
                 whiten_dim: int | str | None = "auto", spherical: bool | None = None, n_init: int = 10,
                 balanced: bool = False, method_kwargs: dict | None = None, trust_custom_code: bool = False,
                 clusterer: str = "kmeans", head: str | None = "auto", self_label: bool = False,
                 entropy_weight: float | None = None, head_epochs: int | None = None, reduce: str | None = None,
                 reduce_dim: int | None = None, k_range: str | None = None, min_cluster_size: int | None = None,
                 init: str | None = None, init_lr_scale: float | None = None, layer_decay: float | None = None,
                 freeze_blocks: int = 0, init_head_warmup_steps: int | None = None):
        self.method = method
        self.k = k
        self.backbone = backbone
        self.model = model
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.time_budget = time_budget
        self.config = config
        self.device = device
        self.random_state = random_state
        self.out_dir = out_dir
        self.verbose = verbose
        self.whiten_dim = whiten_dim
        self.spherical = spherical
        self.n_init = n_init
        self.balanced = balanced
        self.method_kwargs = method_kwargs
        self.trust_custom_code = trust_custom_code
        self.clusterer = clusterer
        self.head = head
        self.self_label = self_label
        self.entropy_weight = entropy_weight
        self.head_epochs = head_epochs
        self.reduce = reduce
        self.reduce_dim = reduce_dim
        self.k_range = k_range
        self.min_cluster_size = min_cluster_size
        self.init = init
        self.init_lr_scale = init_lr_scale
        self.layer_decay = layer_decay
        self.freeze_blocks = freeze_blocks
        self.init_head_warmup_steps = init_head_warmup_steps

    # --- configuration --------------------------------------------------------------
    def _build_config(self, image_size: int, n_images: int):
        from deepclust.train.config import TrainConfig

        if isinstance(self.config, dict):
            # A dict without a method is read for this estimator's method.
            d = {**TrainConfig().to_dict(), "method": self.method, **self.config}
        elif self.config is not None:
            d = TrainConfig.load(self.config).to_dict()
        elif (recipe := _small_image_recipe(self.method, image_size)) is not None:
            log.info("no config given: training with the %s recipe (small images)", recipe)
            d = TrainConfig.load(recipe).to_dict()
        else:
            d = TrainConfig().to_dict()
        if self.method != d["method"]:
            if self.config is not None:
                # A recipe for another method: its method_kwargs/augment do not apply.
                d["method_kwargs"] = {}
            d["method"] = self.method
        if self.backbone is not None:
            d["backbone"] = self.backbone
        for key in ("epochs", "batch_size", "lr", "time_budget"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        d["method_kwargs"] = {**d["method_kwargs"], **(self.method_kwargs or {})}
        if self._k_number() is not None:
            d["k"] = int(self.k)  # "auto" / HDBSCAN: training keeps the recipe's k
        d.update(device=self.device, seed=int(self.random_state), image_size=image_size)
        if d["batch_size"] > n_images:
            d["batch_size"] = n_images     # one batch of everything for tiny inputs
        return self._resolve_init(d)

    _INIT_KNOBS = ("init", "init_lr_scale", "layer_decay", "freeze_blocks", "init_head_warmup_steps")

    def _resolve_init(self, d: dict):
        """``--init`` and its knobs over the config, resolved as `deepclust train` does."""
        from deepclust.train.config import TrainConfig
        from deepclust.train.init_from import resolve_init

        knobs = {key: getattr(self, key) for key in self._INIT_KNOBS if getattr(self, key) not in (None, 0)}
        given = {"image_size", *knobs, *(key for key in ("backbone", "epochs", "batch_size", "lr")
                                          if getattr(self, key) is not None)}
        return resolve_init(TrainConfig.from_dict({**d, **knobs}), given)

    def _to_store(self, x: Any, size: int | None = None, max_size: int = 96):
        if isinstance(x, (str, Path)):
            from deepclust.data.store import load_images

            if size is None and isinstance(self.config, (str, Path)):
                from deepclust.train.config import TrainConfig

                size = TrainConfig.load(self.config).image_size
            return load_images(str(x), size=size, max_size=max_size, progress=self.verbose)
        if hasattr(x, "images") and hasattr(x, "labels"):
            return x
        return _ArrayStore(check_images(x))

    # --- scikit-learn API -----------------------------------------------------------
    def fit(self, x: Any, y: Any = None) -> DeepClusterer:
        """Train on ``x`` (array, ImageStore, or source spec) -- unless ``model`` is given --
        and cluster it; ``y`` is ignored."""
        if not (self.k == "auto" or (self.k is None and self.clusterer == "hdbscan")) and (
                isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1):
            raise DeepclustError(f"k must be a positive integer or 'auto' (None with clusterer='hdbscan'), "
                                 f"got {self.k!r}")
        from deepclust.core.device import resolve_device

        resolve_device(self.device)  # an unknown or absent device fails here, before any work
        if self.model is not None:
            return self._fit_with_model(x)
        from deepclust.train.loop import train

        init_size = None
        if self.init and isinstance(x, (str, Path)) and not isinstance(self.config, (str, Path)):
            from deepclust.train.init_from import describe_init

            init_size = describe_init(self.init).image_size  # decode at the model's own size
        store = self._to_store(x, size=init_size, max_size=max(96, init_size or 0))
        n = len(store.images)
        if n < (self._k_number() or 0):
            raise DataError(f"{n} images cannot form k={self.k} clusters: lower k or add images")
        cfg = self._build_config(int(store.images.shape[1]), n)
        with tempfile.TemporaryDirectory(prefix="deepclust-fit-") as tmp:
            run_dir = Path(self.out_dir) if self.out_dir is not None else Path(tmp) / "run"
            # Exactly `deepclust train`: train, then the pipeline of `cluster --model RUN`.
            train(cfg, store, run_dir, progress=self.verbose, trust_custom_code=self.trust_custom_code)
            self._cluster(store, str(run_dir))
        self.run_dir_ = Path(self.out_dir) if self.out_dir is not None else None
        return self

    def _fit_with_model(self, x: Any) -> DeepClusterer:
        from deepclust.features import LoadedModel, load_model

        if isinstance(self.model, LoadedModel):
            loaded: LoadedModel | None = self.model
        elif isinstance(self.model, str) and self.model in ("raw", "pca"):
            loaded = None  # built once the store's working size is known
        else:
            loaded = load_model(self.model, device=self.device,  # before decoding: fails fast
                                trust_custom_code=self.trust_custom_code)
        store = self._to_store(x, size=getattr(loaded, "image_size", None),
                               max_size=getattr(loaded, "max_size", 96))
        if len(store.images) < (self._k_number() or 0):
            raise DataError(f"{len(store.images)} images cannot form k={self.k} clusters: lower k or add images")
        with tempfile.TemporaryDirectory(prefix="deepclust-fit-") as tmp:
            out = Path(self.out_dir) if self.out_dir is not None else Path(tmp)
            self._cluster(store, loaded if loaded is not None else self.model, out_dir=out)
        self.run_dir_ = None
        return self

    def _cluster(self, store: Any, model: Any, out_dir: str | Path | None = None) -> None:
        from deepclust.features import LoadedModel, load_model
        from deepclust.pipeline import cluster_store

        if not isinstance(model, LoadedModel):
            model = load_model(model, device=self.device, image_size=int(store.images.shape[1]),
                               pca_dim=min(50, len(store.images) - 1), seed=int(self.random_state),
                               trust_custom_code=self.trust_custom_code)
        k = self._k_number() or self.k
        result = cluster_store(store, k=k, out_dir=out_dir if out_dir is not None else model.spec,
                               model=model, seed=int(self.random_state), n_init=int(self.n_init),
                               spherical=self.spherical, balanced=bool(self.balanced),
                               whiten_dim=self._whiten_dim(), device=self.device, report=False,
                               progress=self.verbose, clusterer=self.clusterer, head=self.head,
                               head_options=self._head_options(), reduce=self.reduce, reduce_dim=self.reduce_dim,
                               k_range=self.k_range, min_cluster_size=self.min_cluster_size)
        self.loaded_ = model
        self.encoder_ = model.encoder
        self.method_ = model.method
        self.config_ = model.config
        self.image_size_ = int(store.images.shape[1])
        self.clustering_ = result.clustering
        self.labels_ = result.labels
        self.cluster_centers_ = result.clustering.centroids
        self.metrics_ = result.info
        assert result.embeddings is not None
        self.embeddings_ = self._unit(result.embeddings)

    def fit_predict(self, x: Any, y: Any = None) -> np.ndarray:
        return self.fit(x).labels_

    def transform(self, x: Any) -> np.ndarray:
        """The encoder's embeddings ``(N, D)`` float32 (L2-normalised when clustered on the sphere)."""
        from deepclust.models.encoder import embed_images

        self._check_fitted()
        images = self._images(x)
        if images.shape[1] != self.image_size_:
            raise DataError(f"this DeepClusterer was fitted on {self.image_size_}x{self.image_size_} images; "
                            f"got {images.shape[1]}x{images.shape[2]}: resize them first")
        return self._unit(embed_images(self.encoder_, images, progress=self.verbose))

    def predict(self, x: Any) -> np.ndarray:
        """The cluster of each image, ``(N,)`` int64 (`Clustering.predict`)."""
        self._check_fitted()
        return self.clustering_.predict(self.transform(x))

    def _unit(self, emb: np.ndarray) -> np.ndarray:
        from deepclust.cluster import l2_normalize

        return l2_normalize(emb) if self.clustering_.spherical else np.asarray(emb, np.float32)

    def _k_number(self) -> int | None:
        """k as an int, or None for ``"auto"`` / HDBSCAN."""
        return None if self.k is None or isinstance(self.k, str) else int(self.k)

    def _head_options(self) -> dict[str, Any]:
        given = {"self_label": self.self_label or None, "entropy_weight": self.entropy_weight,
                 "epochs": self.head_epochs}
        return {key: value for key, value in given.items() if value is not None}

    def _whiten_dim(self) -> int | None:
        if self.whiten_dim == "auto":
            return None  # the encoder's default (a run's recipe)
        if self.whiten_dim is None:
            return 0
        if isinstance(self.whiten_dim, bool) or not isinstance(self.whiten_dim, (int, np.integer)) \
                or self.whiten_dim < 0:
            raise DeepclustError(f"whiten_dim must be an int >= 0, None or 'auto', got {self.whiten_dim!r}")
        return int(self.whiten_dim)

    # --- helpers --------------------------------------------------------------------
    def _images(self, x: Any) -> np.ndarray:
        if isinstance(x, (str, Path)) or (hasattr(x, "images") and hasattr(x, "labels")):
            return np.asarray(self._to_store(x, size=getattr(self, "image_size_", None)).images)
        return check_images(x)

    def _check_fitted(self) -> None:
        if not hasattr(self, "clustering_"):
            raise DeepclustError("this DeepClusterer is not fitted yet: call fit(images) first")


__all__ = ["DeepClusterer", "Whitener", "check_images"]  # Whitener re-exported
