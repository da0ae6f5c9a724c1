"""Image-text contrastive training: CLIP, ALIGN and UniCL (Florence) on image-caption pairs.

One model for the three objectives (`deepclust.models.image_text.ImageTextEncoder`): an image
tower (any `Encoder`) + linear projection, a CLIP-style text transformer + tokenizer, and a
learned scale. The objectives (`deepclust.losses.contrastive`, over the global batch under DDP):

* ``clip``  -- CLIP (Radford et al., 2021): symmetric cross-entropy of ``exp(log_scale) * cos``,
  ``log_scale`` initialised to ln(1/0.07), clamped to [0, ln 100] after each optimiser step;
* ``align`` -- ALIGN (Jia et al., 2021): the same on ``cos / temperature``, temperature
  initialised to 1.0 (kept >= 0.01 after each step), label smoothing 0.1;
* ``unicl`` -- UniCL (Yang et al., 2022): targets from labels, every same-label pair is a
  positive (class folders: the class; caption data: one label per image, i.e. CLIP).

Data (`deepclust.data.pairs.load_pairs`): the loop hands the method the training store in
`TrainContext.store`; each step draws one of every image's captions at random (the torch
generator, so resuming replays it). Token ids of every distinct caption are computed once.

Image tower: a trunk trained from scratch (``--backbone``; one random-resized crop + flip
per step, ``augment`` overrides it) or a given `Encoder` (``--init hf:...|RUN``: its own
deterministic preprocessing), fine-tuned, or **locked** with ``lock_image: true`` (LiT, Zhai
et al. 2022: the tower is frozen and kept in eval mode; its projection and the text tower
train).

Tokenizer: ``tokenizer: PATH`` (a tokenizer.json or a folder with one), else a byte-level BPE
of at most ``vocab_size`` tokens trained on the captions when training starts. It is saved
in the checkpoint (``model.safetensors``, the ``__extra__.tokenizer_json`` bytes), so a run
is a self-contained CLIP for ``deepclust zeroshot --model RUN`` and ``--namer RUN``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from deepclust.core.distributed import get_rank, is_dist
from deepclust.losses.contrastive import align_loss, clip_loss, unicl_loss
from deepclust.methods.base import Method, StepOutput, StepState, TrainContext
from deepclust.methods.common import MethodConfigError, as_encoder, build_views, check_backbone, patch_size_of
from deepclust.methods.config import TypedConfig
from deepclust.models.encoder import Encoder
from deepclust.models.image_text import ImageTextEncoder, ImageTextHead
from deepclust.models.text import TextTokenizer, TextTransformer, train_bpe

__all__ = ["ALIGN", "CLIP", "ImageTextConfig", "ImageTextMethod", "UniCL"]

#: Special tokens of a BPE trained by `train_bpe`: <pad> 0, <sot> 1, <eot> 2.
_TRAINED_EOT_ID = 2


@dataclass
class ImageTextConfig(TypedConfig):
    """Hyper-parameters of ``clip``, ``align`` and ``unicl`` (``method_kwargs``), sized for CPU.

    embed_dim: joint-space dimension. context_length, text_width, text_layers, text_heads:
    the text transformer. vocab_size: most tokens of the trained BPE (rows of the token
    embedding). tokenizer: a tokenizer.json (or folder) to use instead of training one.
    lock_image: freeze the image tower (LiT). label_smoothing: ALIGN's (0.1).
    templates: prompt templates turning class names into captions for labelled image
    folders (default `deepclust.data.pairs.CAPTION_TEMPLATES`). augment: views of a
    from-scratch image tower (`MultiCropAugment` options; one global crop is used).
    """

    embed_dim: int = 128
    context_length: int = 32
    text_width: int = 128
    text_layers: int = 2
    text_heads: int = 4
    vocab_size: int = 2048
    tokenizer: str | None = None
    lock_image: bool = False
    label_smoothing: float = 0.1
    templates: tuple[str, ...] | None = None
    augment: dict[str, Any] | None = None


_VIEW_DEFAULTS: dict[str, Any] = dict(n_global=1, global_scale=(0.5, 1.0), n_local=0, color_jitter=None,
                                      grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


class ImageTextMethod(Method):
    """Shared by `CLIP`, `ALIGN` and `UniCL` (they differ in ``objective`` only)."""

    objective: ClassVar[str] = "clip"
    paired_data: ClassVar[bool] = True   # trains on `deepclust.data.pairs.PairStore`s
    Config = ImageTextConfig

    def __init__(self, backbone: nn.Module, config: ImageTextConfig | None = None, *, k: int = 10,
                 img_size: int = 32, **overrides: Any):
        cfg: ImageTextConfig = self.make_config(config, overrides)
        _check(cfg)
        views = None
        if not isinstance(backbone, Encoder):
            check_backbone(backbone, in_chans=3, method=self.name)
            views = build_views({**_VIEW_DEFAULTS, "global_size": img_size}, cfg.augment,
                                     patch_size_of(backbone))
            image = as_encoder(backbone, views, self.name)
        else:
            image = backbone
        image.requires_grad_(not cfg.lock_image)
        tokenizer = TextTokenizer.from_path(cfg.tokenizer) if cfg.tokenizer else None
        vocab = tokenizer.vocab_size if tokenizer is not None else cfg.vocab_size
        eot_id = tokenizer.eot_id if tokenizer is not None else _TRAINED_EOT_ID
        text = TextTransformer(vocab, eot_id,
                               context_length=cfg.context_length, width=cfg.text_width, layers=cfg.text_layers,
                               heads=cfg.text_heads, embed_dim=cfg.embed_dim)
        super().__init__(image)
        self.head = ImageTextHead(int(image.embed_dim), text,
                                  scale="temperature" if self.objective == "align" else "log_scale")
        self.head.tokenizer = tokenizer
        self.config, self.k, self.views = cfg, int(k), views
        self._pairs: Any = None
        self._tokens: torch.Tensor | None = None
        # The joint-space Encoder over backbone + head; kept out of the module tree (no second
        # copy of the weights in state_dict).
        object.__setattr__(self, "_joint", ImageTextEncoder(image, self.head, name=self.name))

    def encoder(self) -> ImageTextEncoder:
        """The image tower and the head as one CLIP-like `Encoder` (joint-space embeddings)."""
        joint: ImageTextEncoder = self.__dict__["_joint"]
        return joint

    def train(self, mode: bool = True) -> ImageTextMethod:
        super().train(mode)
        if self.config.lock_image:  # LiT: the locked tower stays in eval mode (no BatchNorm updates)
            self.backbone.eval()
        return self

    # --- data ---------------------------------------------------------------------------
    def on_train_start(self, ctx: TrainContext) -> None:
        store = ctx.store
        if store is None or not hasattr(store, "caption_offsets"):
            raise MethodConfigError(f"{self.name} trains on image-caption pairs: load the data with "
                                    "deepclust.data.pairs.load_pairs (CLI: --data pairs.csv, a folder with "
                                    ".txt captions, or a folder with class sub-folders)")
        self.use_pairs(store)
        if self.head.tokenizer is None:
            self.head.tokenizer = _train_tokenizer(store.texts, self.config.vocab_size)

    def use_pairs(self, store: Any) -> None:
        """Captions of ``store`` (a `PairStore`) for `collate`."""
        self._pairs = store
        self._tokens = None
        self._offsets = torch.as_tensor(store.caption_offsets, dtype=torch.int64)
        self._caption_ids = torch.as_tensor(store.caption_ids, dtype=torch.int64)
        self._labels = torch.as_tensor(store.pair_labels, dtype=torch.int64)

    def _token_table(self, device: torch.device) -> torch.Tensor:
        """``(T, L)`` ids of every distinct caption, computed once (and after a tokenizer change)."""
        if self._tokens is None:
            ids = self.head.tokenize(self._pairs.texts)
            rows = self.head.text.token_embedding.num_embeddings
            if int(ids.max()) >= rows:
                raise MethodConfigError(f"{self.name}: the tokenizer has ids up to {int(ids.max())} but the text "
                                        f"tower has {rows} rows: "
                                        "raise method_kwargs.vocab_size")
            self._tokens = ids
        if self._tokens.device != device:
            self._tokens = self._tokens.to(device)
        return self._tokens

    def collate(self, batch: dict[str, torch.Tensor], state: StepState) -> dict[str, Any]:
        """``{"images": float input, "text": int64 (B, L), "labels": (B,), "index"}``: one
        caption drawn at random per image."""
        if self._pairs is None:
            raise MethodConfigError(f"{self.name}: no captions (on_train_start was not called with a PairStore)")
        index = batch["index"].cpu()
        lo = self._offsets[index]
        count = self._offsets[index + 1] - lo
        pick = lo + (torch.rand(len(index)) * count).long().clamp_max(count - 1)
        device = batch["images"].device
        text = self._token_table(device)[self._caption_ids[pick].to(device)]
        raw = batch["images"]
        images = self.views(raw)[0] if self.views is not None else self.encoder().preprocess(raw)
        return {"images": images, "text": text, "labels": self._labels[index].to(device), "index": batch["index"]}

    # --- the step -----------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], state: StepState) -> StepOutput:
        head = self.head
        image = head.image_projection(self.backbone(batch["images"]))
        text = head.encode_text(batch["text"])
        scale = head.scale_parameter()
        if self.objective == "align":
            loss = align_loss(image, text, scale, label_smoothing=self.config.label_smoothing)
        elif self.objective == "unicl":
            loss = unicl_loss(image, text, batch["labels"], scale)
        else:
            loss = clip_loss(image, text, scale)
        return StepOutput(terms={self.objective: loss}, logs={"logit_scale": head.logit_scale})

    def after_optimizer_step(self, state: StepState) -> None:
        self.head.clamp_scale_()

    # --- the tokenizer travels with the checkpoint -----------------------------------------
    def state_extra(self) -> dict[str, Any]:
        tok = self.head.tokenizer
        if tok is None:
            return {}
        return {"tokenizer_json": torch.frombuffer(bytearray(tok.to_json().encode("utf-8")), dtype=torch.uint8)}

    def load_state_extra(self, state: dict[str, Any]) -> None:
        data = state.get("tokenizer_json")
        if data is not None:
            self.head.tokenizer = TextTokenizer.from_json(bytes(data.cpu().numpy().tobytes()).decode("utf-8"))
            self._tokens = None


def _check(cfg: ImageTextConfig) -> None:
    problems = [f"{name} must be >= {low} (got {getattr(cfg, name)})"
                for name, low in (("embed_dim", 1), ("context_length", 2), ("text_width", 1), ("text_layers", 1),
                                  ("text_heads", 1), ("vocab_size", 300))
                if getattr(cfg, name) < low]
    if not 0.0 <= cfg.label_smoothing < 1.0:
        problems.append(f"label_smoothing must be in [0, 1) (got {cfg.label_smoothing})")
    if cfg.text_width % cfg.text_heads:
        problems.append(f"text_width {cfg.text_width} must be divisible by text_heads {cfg.text_heads}")
    if problems:
        raise MethodConfigError("image-text method: " + "; ".join(problems))


def _train_tokenizer(texts: list[str], vocab_size: int) -> TextTokenizer:
    """The BPE on the captions; under DDP rank 0 trains it and every process gets its JSON."""
    if not is_dist():
        return train_bpe(texts, vocab_size)
    import torch.distributed as dist

    box: list[Any] = [train_bpe(texts, vocab_size).to_json() if get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return TextTokenizer.from_json(str(box[0]))


class CLIP(ImageTextMethod):
    """CLIP's objective (see module doc)."""

    name = "clip"
    objective = "clip"


class ALIGN(ImageTextMethod):
    """ALIGN's objective: learnable temperature (init 1.0), label smoothing 0.1."""

    name = "align"
    objective = "align"


class UniCL(ImageTextMethod):
    """UniCL's objective: every pair sharing a label is a positive."""

    name = "unicl"
    objective = "unicl"
