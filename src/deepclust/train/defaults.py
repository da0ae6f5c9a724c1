"""Data-aware defaults: what `deepclust train --method M --data D` trains when no recipe is given.

    profile_data(images) -> DataProfile                  # size, count, grey or colour, the machine
    choose_defaults(method, profile) -> dict              # TrainConfig fields
    apply_defaults(cfg, images, given) -> (cfg, chosen)   # explicit settings always win

The base is the method's CPU-sized small-image recipe (``configs/digits_<method>.yaml``: what
is known to work on small grey digits -- the small CNN, gentle views, BatchNorm in DINO's
head, short-run teacher settings), adapted to the data and the machine:

* **image size**: the store's own size (the CLI decodes at the native size, at most
  `MAX_CPU_SIZE` px on a CPU); ViT patch size ``S / 8`` rounded to 2, 4 or 8 px. ViTs on
  small grey images (17-32 px: digits, characters, sketches) work at `VIT_GREY_SIZE` (16 px)
  with 4 px patches, the 4 x 4 grid of the 8 px recipe: a ViT's cost grows with its tokens,
  and at 28 px (7 x 7 patches) a CPU budget buys 4x fewer steps. On 10,000 28 px digits, a
  5-minute one-thread run: iBOT k-NN 0.52 / ACC 0.38 at 28 px, 0.82 / 0.82 at 16 px; DINOv2
  0.74 / 0.58 at 28 px, 0.89 / 0.80 at 16 px (ACC of the SCAN head).
  ``--size`` keeps the size asked for (patch ``S / 8``); the CLI decodes the source again at
  the chosen size, so the run and ``cluster --model RUN`` see the same images.
* **backbone width**: the small CNN ``[32, 64, 128]`` up to 32 px and for grey images;
  ``[64, 128, 256]`` for larger colour images (more to learn, and a conv net of that width
  still runs at hundreds of images per second on a laptop CPU).
* **views**: grey images keep the recipe's gentle views (no flip -- digits are not mirror
  symmetric --, no colour jitter, blur or solarisation); colour images get flips, colour
  jitter and random grey, crops of scale 0.3-1.
* **batch**: about N / 40 images per step, a power of two in [64, 256] for conv nets, half
  that for ViTs (they need steps more than big batches); never more than N / 4. Methods whose
  loss is over the pairs of a batch (`PAIRWISE_METHODS`: DAC) keep at least the recipe's batch:
  on digits, DAC's batch 128 merged two digits on two of three seeds where 256 did not.
* **lr**: the recipe's base rate (for a batch of 256; the loop scales it).
* **epochs**: through a time budget, unless ``--epochs`` or ``--time`` is given:
  `DEFAULT_BUDGET` (10 minutes) for 10,000 images or more, proportionally less for fewer
  (at least 2 minutes, `default_budget`); the recipe's epochs are the reference its
  epoch-counted settings are stretched from.
* **final clustering**: SCAN heads on the trained embeddings (``cluster_head: scan``,
  `deepclust.heads`), `DEFAULT_HEADS` (50) of them trained at once and the lowest-loss one
  kept (``cluster_head_kwargs``), instead of k-means alone. On the six default runs of 10,000
  28 px digits (benchmarks/results/defaults.md) k-means gave 0.74-0.85 ACC, 10 heads
  0.84-0.94 (one run 0.86 / 0.94 / 0.91 over three seeds), 50 heads 0.88-0.95; the whole
  clustering command took 42-80 s instead of 15-25 s. ``--head none`` is k-means alone.
* **threads / precision**: one torch thread for images of at most 16 px (each op is too
  small to split), all cores above; ``amp: auto`` (`deepclust.core.device.amp_dtype`).

`apply_defaults` logs every chosen value; they are ordinary TrainConfig fields, so the run's
config.json states them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from deepclust.core.device import cpu_has_bf16
from deepclust.errors import DeepclustError
from deepclust.train.config import TrainConfig, read_yaml, resolve_config_path

log = logging.getLogger("deepclust.train")

DEFAULT_BUDGET = "10m"
MAX_CPU_SIZE = 64
PAIRWISE_METHODS = ("dac",)
#: Clustering heads trained at once for the final clustering (the lowest-loss one is kept; module doc).
DEFAULT_HEADS = 50
#: ViTs on grey images of 17-32 px work at this size, 4 px patches (module doc).
VIT_GREY_SIZE = 16
#: Fields the recipe sets that describe its data set, not the method: the defaults take them from the data.
DATA_FIELDS = ("data", "image_size", "k", "eval_data")


@dataclass(frozen=True)
class DataProfile:
    """What the defaults look at: the data and the machine."""

    n_images: int
    image_size: int
    grayscale: bool
    cores: int
    bf16: bool

    @property
    def colour(self) -> bool:
        return not self.grayscale


def profile_data(images: np.ndarray, *, cores: int | None = None, sample: int = 256) -> DataProfile:
    """Size, count and colour of a store's ``uint8 (N, S, S, 3)`` images, and the machine's cores
    (those this process may use) and bf16 support."""
    n = len(images)
    idx = np.linspace(0, n - 1, min(n, sample)).astype(np.int64)
    x = np.asarray(images[idx]).astype(np.int16)
    grey = bool(np.abs(x[..., 0] - x[..., 1]).max() <= 2 and np.abs(x[..., 0] - x[..., 2]).max() <= 2)
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return DataProfile(n_images=n, image_size=int(images.shape[1]), grayscale=grey, cores=int(cores),
                       bf16=cpu_has_bf16())


def default_budget(n_images: int) -> str:
    """`DEFAULT_BUDGET` (10 minutes) from 10,000 images on, less for fewer (at least 2 minutes):
    ``"4m"`` for 4,000 images, ``"2m"`` for scikit-learn's 1,797 digits."""
    return f"{max(2, min(10, round(10 * n_images / 10_000)))}m"


def _pow2_between(value: float, lo: int, hi: int) -> int:
    p = 2 ** int(np.floor(np.log2(max(1.0, value))))
    return int(min(hi, max(lo, p)))


def _recipe(method: str) -> dict[str, Any]:
    try:
        return read_yaml(resolve_config_path(f"digits_{method}"))
    except DeepclustError:
        return {}   # a method without a small-image recipe: TrainConfig's own defaults


def choose_defaults(method: str, prof: DataProfile, *, keep_size: bool = False) -> dict[str, Any]:
    """TrainConfig fields for `method` on data described by `prof` (module doc); ``image_size``
    only where the working size differs from the data's (ViTs on small grey images), never with
    `keep_size` (a size given on the command line)."""
    base = {k: v for k, v in _recipe(method).items() if k not in DATA_FIELDS}
    backbone = str(base.get("backbone", TrainConfig.backbone))
    vit = backbone.startswith("vit")   # vit_tiny, vit_tiny_convstem, ...
    s = prof.image_size
    out: dict[str, Any] = dict(base)
    if vit:
        if keep_size or prof.colour or s <= VIT_GREY_SIZE or s > 32:
            patch = 2 if s <= 16 else 4 if s <= 40 else 8
        else:   # small grey images: a 4 x 4 grid of 4 px patches at 16 px (module doc)
            s, patch = VIT_GREY_SIZE, 4
            out["image_size"] = s
        out["backbone_kwargs"] = {**dict(base.get("backbone_kwargs") or {}), "patch_size": patch}
    elif backbone == "small_cnn":
        wide = prof.colour and s > 32
        out["backbone_kwargs"] = {**dict(base.get("backbone_kwargs") or {}),
                                  "widths": [64, 128, 256] if wide else [32, 64, 128]}
    batch = _pow2_between(prof.n_images / 40, 64, 256) // (2 if vit else 1)
    if method in PAIRWISE_METHODS:
        batch = max(batch, int(base.get("batch_size", batch)))
    out["batch_size"] = int(max(8, min(batch, prof.n_images // 4)))
    out["torch_threads"] = 1 if s <= 16 else 0
    out["cluster_head"] = "scan"
    out["cluster_head_kwargs"] = {"n_heads": DEFAULT_HEADS}
    out["monitor_samples"] = min(int(base.get("monitor_samples", 1024)), 1024)
    out["eval_samples"] = min(prof.n_images, 5000)
    kwargs = dict(base.get("method_kwargs") or {})
    if "augment" in kwargs and prof.colour:
        kwargs["augment"] = {**dict(kwargs["augment"]), "flip": True, "color_jitter": [0.4, 0.4, 0.2, 0.1],
                             "grayscale_p": 0.2, "global_scale": [0.3, 1.0]}
    if kwargs:
        out["method_kwargs"] = kwargs
    return out


def apply_defaults(cfg: TrainConfig, images: np.ndarray, given: set[str], *,
                   cores: int | None = None) -> tuple[TrainConfig, dict[str, Any]]:
    """`cfg` with the data-aware defaults for every field not in `given` (flags, ``--set``, a
    recipe's keys), and a default time budget when neither epochs nor a budget was given.
    Returns the new config and what was chosen (also logged)."""
    prof = profile_data(images, cores=cores)
    full = choose_defaults(cfg.method, prof, keep_size="image_size" in given)
    chosen = {k: v for k, v in full.items() if k not in given}
    if "time_budget" not in given and "epochs" not in given:
        chosen["time_budget"] = default_budget(prof.n_images)
    if "backbone" in given and cfg.backbone != full.get("backbone", cfg.backbone):
        full.pop("backbone_kwargs", None)     # widths / patch chosen for another backbone do not apply
        chosen.pop("backbone_kwargs", None)
    for key in ("method_kwargs", "backbone_kwargs", "cluster_head_kwargs"):
        if key in given and key in full:      # --set KEY.x=...: merged into the chosen values, theirs win
            chosen[key] = _merge(full[key], getattr(cfg, key))
    new = TrainConfig.from_dict({**cfg.to_dict(), **chosen, "image_size": full.get("image_size", prof.image_size)})
    log.info("no recipe: settings chosen for %d %s images of %d px on %d core(s)%s (%s): %s", prof.n_images,
             "grey" if prof.grayscale else "colour", prof.image_size, prof.cores, " with bf16" if prof.bf16 else "",
             f"from digits_{cfg.method}" if _recipe(cfg.method) else "TrainConfig's defaults",
             ", ".join(f"{k}={v}" for k, v in sorted(chosen.items()) if k != "method_kwargs")
             + (f", method_kwargs={chosen['method_kwargs']}" if "method_kwargs" in chosen else ""))
    return new, chosen


def _merge(base: dict[str, Any], mine: dict[str, Any]) -> dict[str, Any]:
    """`mine` over `base`, one level into dict values (``augment``)."""
    out = dict(base)
    for key, value in mine.items():
        out[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


def given_keys(overrides: dict[str, Any], sets: list[str]) -> set[str]:
    """The TrainConfig fields a command line set explicitly (flags with a value, ``--set`` keys)."""
    keys = {k for k, v in overrides.items() if v is not None}
    return keys | {item.split("=", 1)[0].split(".")[0].strip() for item in sets if "=" in item}


__all__ = ["DEFAULT_BUDGET", "DataProfile", "apply_defaults", "choose_defaults", "default_budget", "given_keys",
           "profile_data"]
