"""The text side of image-text models: a tokenizer and a small CLIP-style text transformer.

Tokenizer (`TextTokenizer`): a Hugging Face ``tokenizers`` tokenizer, either read from a
local ``tokenizer.json`` (a file, or a folder holding one; JSON only, so loading never runs
code) or a byte-level BPE trained on the captions (`train_bpe`: NFKC + lower-case, GPT-2's
byte-level pre-tokenisation so every string encodes, special tokens ``<pad>``, ``<sot>``,
``<eot>``). ``encode`` gives ``int64 (N, context_length)``: ``[sot] + tokens + [eot]``, cut
to the context length (the end-of-text token is always kept), padded with the pad id. The
tokenizer travels with a run as its ``tokenizer.json`` text (`TextTokenizer.to_json`).

Text encoder (`TextTransformer`, CLIP, Radford et al. 2021, sec. 2.4): token + learned
position embeddings -> pre-LayerNorm transformer blocks with a **causal mask** -> final
LayerNorm -> the features at the **end-of-text token** -> linear projection (no bias) into
the joint space. With the causal mask nothing after the end-of-text token reaches it, so
padding needs no attention mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from deepclust.errors import DeepclustError

__all__ = ["TextTokenizer", "TextTransformer", "require_tokenizers", "train_bpe"]

#: Start / end-of-text / padding token names we recognise in a pretrained tokenizer.json.
_SOT = ("<sot>", "<|startoftext|>", "<s>", "[CLS]")
_EOT = ("<eot>", "<|endoftext|>", "</s>", "[SEP]")
_PAD = ("<pad>", "[PAD]")


def require_tokenizers() -> Any:
    try:
        import tokenizers
    except ImportError as exc:  # pragma: no cover - installed with the 'pretrained' extra
        raise DeepclustError("image-text training needs the Hugging Face tokenizers package: "
                             "pip install 'deepclust[pretrained]' (or pip install tokenizers)") from exc
    return tokenizers


class TextTokenizer:
    """A ``tokenizers.Tokenizer`` with the ids of its start, end-of-text and pad tokens."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        eot = _first_id(vocab, _EOT)
        if eot is None:
            raise DeepclustError(f"the tokenizer has no end-of-text token (one of {', '.join(_EOT)})")
        self.eot_id: int = eot
        sot = _first_id(vocab, _SOT)
        pad = _first_id(vocab, _PAD)
        self.sot_id: int | None = sot
        self.pad_id: int = 0 if pad is None else pad
        self.vocab_size = int(tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def from_json(cls, text: str) -> TextTokenizer:
        tokenizers = require_tokenizers()
        try:
            return cls(tokenizers.Tokenizer.from_str(text))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises its own Exception type
            raise DeepclustError(f"not a valid tokenizer.json: {exc}") from exc

    @classmethod
    def from_path(cls, path: str | Path) -> TextTokenizer:
        """A ``tokenizer.json`` file, or a folder holding one (vocab/merges-only folders are not read)."""
        p = Path(path).expanduser()
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise DeepclustError(f"no tokenizer.json at {path}: give a tokenizer.json file or a folder with one "
                                 "(or leave the tokenizer unset to train a BPE on the captions)")
        return cls.from_json(file.read_text(encoding="utf-8"))

    def to_json(self) -> str:
        return str(self.tokenizer.to_str())

    def encode(self, texts: Sequence[str], context_length: int) -> torch.Tensor:
        """``int64 (len(texts), context_length)`` token ids (see the module doc)."""
        if context_length < 2:
            raise DeepclustError(f"context_length must be at least 2, got {context_length}")
        head = [] if self.sot_id is None else [self.sot_id]
        room = context_length - len(head) - 1
        out = torch.full((len(texts), context_length), self.pad_id, dtype=torch.int64)
        for i, enc in enumerate(self.tokenizer.encode_batch(list(texts), add_special_tokens=False)):
            ids = head + list(enc.ids[:room]) + [self.eot_id]
            out[i, :len(ids)] = torch.tensor(ids, dtype=torch.int64)
        return out


def _first_id(vocab: dict[str, int], names: Sequence[str]) -> int | None:
    for name in names:
        if name in vocab:
            return int(vocab[name])
    return None


def train_bpe(texts: Sequence[str], vocab_size: int = 2048) -> TextTokenizer:
    """A byte-level BPE with at most ``vocab_size`` tokens trained on ``texts`` (deterministic)."""
    tk = require_tokenizers()
    if not texts:
        raise DeepclustError("cannot train a tokenizer on no captions")
    tokenizer = tk.Tokenizer(tk.models.BPE())
    tokenizer.normalizer = tk.normalizers.Sequence([tk.normalizers.NFKC(), tk.normalizers.Lowercase()])
    tokenizer.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(vocab_size=int(vocab_size), special_tokens=["<pad>", "<sot>", "<eot>"],
                                     initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(list(texts), trainer)
    return TextTokenizer(tokenizer)


class TextTransformer(nn.Module):
    """CLIP's text tower (see module doc): ``int64 (B, L)`` ids -> ``(B, embed_dim)``.

    Args:
        vocab_size: rows of the token embedding (at least the tokenizer's vocabulary).
        eot_id: the end-of-text token id whose position's features are projected.
        context_length: L; width, layers, heads: the transformer; embed_dim: joint space.
    """

    attn_mask: torch.Tensor

    def __init__(self, vocab_size: int, eot_id: int, *, context_length: int = 32, width: int = 128,
                 layers: int = 2, heads: int = 4, embed_dim: int = 128):
        super().__init__()
        if width % heads:
            raise DeepclustError(f"text width {width} must be divisible by text heads {heads}")
        self.context_length, self.eot_id, self.embed_dim = int(context_length), int(eot_id), int(embed_dim)
        self.token_embedding = nn.Embedding(int(vocab_size), width)
        self.positional_embedding = nn.Parameter(torch.empty(self.context_length, width))
        block = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.ln_final = nn.LayerNorm(width)
        self.projection = nn.Linear(width, self.embed_dim, bias=False)
        mask = torch.full((self.context_length, self.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", mask, persistent=False)
        # CLIP's initialisation (model.py: initialize_parameters)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.projection.weight, std=width ** -0.5)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.ndim != 2 or ids.shape[1] != self.context_length:
            raise DeepclustError(f"text ids must be (B, {self.context_length}), got {tuple(ids.shape)}")
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.blocks(x, mask=self.attn_mask, is_causal=True)
        x = self.ln_final(x)
        eot = (ids == self.eot_id).int().argmax(dim=1)           # first end-of-text position
        out: torch.Tensor = self.projection(x[torch.arange(len(x), device=x.device), eot])
        return out

