"""`TrainConfig`: every knob of a training run, loaded from a YAML recipe plus overrides.

A recipe (configs/<name>.yaml) is a flat mapping of the fields below, e.g.

    method: dino
    method_kwargs: {out_dim: 1024, teacher_temp: 0.04}
    backbone: small_cnn
    data: digits
    image_size: 32
    epochs: 30
    optimizer: adamw
    lr: 0.0005          # for a batch of 256; the loop uses lr * global_batch / 256

Overrides come from CLI flags and `--set key=value` (the value is parsed as YAML;
`method_kwargs.teacher_temp=0.07` sets one entry of a dict field).

Every field is type-checked on construction (`epochs: ten` fails naming the key, the
expected type and the value), and `method_kwargs` are checked against the typed config of
a registered method (`deepclust.methods.method_config`): an unknown key fails with the
list of valid keys.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deepclust.errors import DeepclustError
from deepclust.methods.config import check_fields

#: An upper bound that catches typos such as `epochs: 1e9` (a billion epochs).
MAX_EPOCHS = 100_000
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
#: Values of `TrainConfig.cluster_head`: k-means alone, or a clustering head (`deepclust.heads.HEAD_KINDS`).
CLUSTER_HEADS = ("none", "scan", "temi")
#: The longest budget accepted (catches typos such as 600h).
MAX_BUDGET_S = 30 * 86400.0


@dataclass
class TrainConfig:
    # what to train
    method: str = "dino"                   # registered name, or "package.module:factory" (factory(cfg) -> Method)
    method_kwargs: dict[str, Any] = field(default_factory=dict)  # method-specific hyper-parameters
    backbone: str = "small_cnn"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    k: int = 10                            # number of clusters (heads, k-means, metrics)
    # final k-means on embeddings PCA-whitened to this many dims (0: L2 only); see deepclust.cluster.whiten
    cluster_whiten_dim: int = 0
    # final clustering: "none" (k-means) or a clustering head trained on the embeddings, "scan" | "temi"
    # (deepclust.heads); `deepclust cluster --model RUN` uses it too unless --head says otherwise
    cluster_head: str = "none"
    cluster_head_kwargs: dict[str, Any] = field(default_factory=dict)  # its HeadConfig fields, e.g. n_heads
    # data
    data: str = ""                         # source spec for deepclust.data.store.load_images
    image_size: int = 32                   # working size S of the store
    eval_data: str | None = None           # optional separate labelled store for online k-NN
    # optimisation
    epochs: int = 10
    batch_size: int = 64                   # per process
    optimizer: str = "adamw"               # adamw | sgd | lars
    lr: float = 5e-4                       # base lr for a batch of 256 (scaled by global batch / 256)
    # how lr scales with the global batch: linear (lr x batch / 256) | sqrt (DINOv2: lr x sqrt(batch / 1024))
    lr_scaling: str = "linear"
    min_lr: float = 1e-6                   # final lr of the cosine schedule (not scaled)
    warmup_epochs: float = 1.0             # linear warm-up from 0 to the scaled lr
    weight_decay: float = 0.04
    weight_decay_end: float | None = None  # cosine wd schedule end value (DINO: 0.04 -> 0.4); None = constant
    momentum: float = 0.9                  # SGD / LARS momentum
    clip_grad: float = 0.0                 # max gradient norm of each parameter (DINO's clip_gradients); 0 disables
    amp: str = "auto"                      # auto (CUDA: bf16; bf16 CPU: bf16 at >= 32 px) | bf16 | fp16 | off
    freeze_last_layer_epochs: int | None = None  # None: the method's own default
    # start the backbone (student and teacher) from SPEC's weights: an hf: id, a Hugging Face
    # DINOv2 / CLIP folder or a deepclust run (its backbone only; heads and optimiser start fresh)
    init: str | None = None
    # adaptation knobs (docs/domain_adaptation.md); None: the --init default (deepclust.train.init_from),
    # filled in when the run starts so config.json states the values used
    init_lr_scale: float | None = None     # x the lr of every group (--init: 0.1; else 1)
    layer_decay: float | None = None       # ViT layer-wise lr decay, BEiT's (--init: 0.9; else 1)
    freeze_blocks: int = 0                 # ViT: freeze the patch embedding and the first N blocks
    init_head_warmup_steps: int | None = None  # head-only steps before step 0 (--init with a teacher head: 50)
    # wall-clock budget for training ("90s", "60m", "2h", "1h30m"): sizes epochs and steps from the
    # measured throughput and stretches every schedule to it (deepclust.train.budget); None: cfg.epochs
    time_budget: str | None = None
    # runtime
    seed: int = 0
    device: str = "auto"                   # auto | cpu | cuda
    num_workers: int = 1                   # >0: a thread prefetches 2*num_workers batches; 0: load in the loop
    # CPU threads for torch during the run (0: torch's default, all cores). Tiny models on
    # 8-16 px images run faster on 1: each op is too small to split, and a second thread
    # contends with anything else on the machine (digits: 23 s on 1 thread, 200 s on 2 with
    # another job running). Restored when train() returns.
    torch_threads: int = 0
    # monitoring and evaluation
    knn_every: int = 1                     # epochs between online k-NN evaluations (0: never)
    knn_k: int = 20
    monitor_samples: int = 2048            # images embedded each epoch for the collapse watch
    eval_samples: int = 10000              # at most this many images for online k-NN (80/20 split)
    collapse_check: bool = True            # raise CollapseError when the run collapses
    log_every: int = 10                    # steps between progress-bar updates
    tensorboard: bool = False

    # ------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        if isinstance(self.amp, bool):  # YAML reads `amp: off` / `amp: on` as booleans
            self.amp = "auto" if self.amp else "off"
        check_fields(self, "training config")
        self.validate()

    def validate(self) -> None:
        problems = [f"{f.name} must be a finite number (got {getattr(self, f.name)})"
                    for f in dataclasses.fields(self)
                    if isinstance(getattr(self, f.name), float) and not math.isfinite(getattr(self, f.name))]
        if problems:  # NaN/inf would slip through every comparison below
            raise DeepclustError("invalid training config: " + "; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.epochs > MAX_EPOCHS:
            problems.append(f"epochs must be at most {MAX_EPOCHS} (got {self.epochs})")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1 (got {self.batch_size})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.lr_scaling not in ("linear", "sqrt"):
            problems.append(f"lr_scaling must be linear or sqrt (got {self.lr_scaling!r})")
        if self.optimizer.lower() not in ("adamw", "sgd", "lars"):
            problems.append(f"optimizer must be adamw, sgd or lars (got {self.optimizer!r})")
        if self.amp not in ("auto", "bf16", "fp16", "off"):
            problems.append(f"amp must be auto, bf16, fp16 or off (got {self.amp!r})")
        if self.k < 1:
            problems.append(f"k must be >= 1 (got {self.k})")
        if self.warmup_epochs < 0:
            problems.append(f"warmup_epochs must be >= 0 (got {self.warmup_epochs})")
        if self.cluster_whiten_dim < 0:
            problems.append(f"cluster_whiten_dim must be >= 0 (got {self.cluster_whiten_dim}; 0 = no whitening)")
        if self.cluster_head not in CLUSTER_HEADS:
            problems.append(f"cluster_head must be one of {', '.join(CLUSTER_HEADS)} (got {self.cluster_head!r})")
        problems.extend(_head_kwargs_problems(self.cluster_head_kwargs))
        if self.torch_threads < 0:
            problems.append(f"torch_threads must be >= 0 (got {self.torch_threads}; 0 = torch's default)")
        if self.init_lr_scale is not None and self.init_lr_scale <= 0:
            problems.append(f"init_lr_scale must be > 0 (got {self.init_lr_scale})")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay must be in (0, 1] (got {self.layer_decay}; 1 = no decay)")
        if self.freeze_blocks < 0:
            problems.append(f"freeze_blocks must be >= 0 (got {self.freeze_blocks})")
        if self.init_head_warmup_steps is not None and self.init_head_warmup_steps < 0:
            problems.append(f"init_head_warmup_steps must be >= 0 (got {self.init_head_warmup_steps})")
        if self.init is not None and not str(self.init).strip():
            problems.append("init must be a model spec (hf:<id>, a Hugging Face folder or a run) or null")
        if self.time_budget is not None:
            problems.extend(_budget_problems(self.time_budget))
        if problems:
            raise DeepclustError("invalid training config: " + "; ".join(problems))
        self._check_method_kwargs()

    def _check_method_kwargs(self) -> None:
        """Unknown keys / wrong types in method_kwargs of a registered method fail here, before
        any data is loaded (custom "module:factory" methods check their own)."""
        from deepclust.methods import METHODS, method_config

        if self.method.lower().replace("-", "_") in METHODS:
            method_config(self.method, self.method_kwargs)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DeepclustError(
                f"unknown training config key(s) {unknown}; valid keys: {', '.join(sorted(known))} "
                "(method-specific settings go under method_kwargs)"
            )
        return cls(**d)

    @classmethod
    def load(cls, recipe: str | Path | None = None, overrides: dict[str, Any] | None = None,
             sets: list[str] | None = None) -> TrainConfig:
        """Defaults <- YAML recipe (path or bare name in configs/) <- overrides <- `key=value` sets."""
        d = cls().to_dict()
        if recipe:
            d.update(read_yaml(resolve_config_path(recipe)))
        for key, value in (overrides or {}).items():
            if value is not None:
                d[key] = value
        for item in sets or []:
            apply_set(d, item)
        return cls.from_dict(d)


def _head_kwargs_problems(kwargs: Any) -> list[str]:
    """What is wrong with ``cluster_head_kwargs``: a dict of `deepclust.heads.HeadConfig` fields."""
    from deepclust.heads import HeadConfig

    if not isinstance(kwargs, dict):
        return [f"cluster_head_kwargs must be a mapping of head options (got {kwargs!r})"]
    known = {f.name for f in dataclasses.fields(HeadConfig)} - {"kind", "device", "progress"}
    unknown = sorted(set(kwargs) - known)
    return [f"cluster_head_kwargs: unknown head option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})"] \
        if unknown else []


def _budget_problems(text: str) -> list[str]:
    """The time budget's parse error, if any."""
    try:
        parse_duration(text)
    except DeepclustError as exc:
        return [str(exc)]
    return []


def parse_duration(text: str | float | int | None) -> float | None:
    """``"90s"``, ``"60m"``, ``"2h"``, ``"1h30m"``, ``"1.5h"`` -> seconds (None -> None).

    A unit is required (s, m, h, d); the whole text must be such terms. Raises
    DeepclustError for anything else, zero, or more than 30 days."""
    if text is None:
        return None
    raw = str(text).strip().lower().replace(" ", "")
    terms = _DURATION.findall(raw)
    if not raw or not terms or "".join(f"{n}{u}" for n, u in terms) != raw:
        raise DeepclustError(f"time budget {text!r} is not a duration: give a number with a unit, e.g. 90s, 60m, "
                             "2h or 1h30m")
    seconds = sum(float(n) * _UNITS[u] for n, u in terms)
    if seconds <= 0 or seconds > MAX_BUDGET_S:
        raise DeepclustError(f"time budget {text!r} must be more than 0 s and at most 30 days")
    return seconds


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DeepclustError(f"cannot parse config {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise DeepclustError(f"config {path} must be a YAML mapping of key: value, got {type(data).__name__}")
    return data


def apply_set(d: dict[str, Any], item: str) -> None:
    """Apply one `key=value` (value parsed as YAML; `a.b=v` sets key b of dict field a)."""
    if "=" not in item:
        raise DeepclustError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:  # invalid YAML, or a tag such as !!python/... (never constructed)
        first = str(exc).splitlines()[0]
        raise DeepclustError(f"--set {item!r}: the value is not plain YAML ({first}); give a number, a "
                             "string, a list [a, b] or a mapping {a: 1}") from None
    parts = key.strip().split(".")
    target = d
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise DeepclustError(f"--set {item!r}: {part!r} is not a mapping")
    target[parts[-1]] = value


def config_dirs() -> list[Path]:
    """Where bare recipe names are looked up: the package's `deepclust/configs` (package
    data, so installed copies have the recipes too; the repository's top-level `configs`
    is a link to it)."""
    pkg = importlib.resources.files("deepclust") / "configs"
    return [Path(str(pkg))] if pkg.is_dir() else []


def resolve_config_path(recipe: str | Path) -> Path:
    """A path to a YAML file, or a bare recipe name such as `digits_dino`."""
    path = Path(recipe)
    if path.is_file():
        return path
    name = path.name if path.suffix in (".yaml", ".yml") else f"{path.name}.yaml"
    for d in config_dirs():
        if (d / name).is_file():
            return d / name
    available = sorted({p.stem for d in config_dirs() for p in d.glob("*.yaml")})
    raise DeepclustError(
        f"config {str(recipe)!r} not found: give a YAML path or one of: "
        f"{', '.join(available) or '(no recipes installed)'}"
    )
