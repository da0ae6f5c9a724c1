"""Tokenizer training / saving / loading and the causal CLIP-style text transformer."""

from __future__ import annotations

import pytest
import torch

from deepclust.errors import DeepclustError
from deepclust.models.text import TextTokenizer, TextTransformer, train_bpe

CAPTIONS = ["a photo of a cat.", "a blurry photo of a dog.", "art of the airplane.", "a photo of the large ship."] * 3


def test_trained_bpe_round_trips_through_tokenizer_json(tmp_path):
    tok = train_bpe(CAPTIONS, vocab_size=300)
    assert (tok.pad_id, tok.sot_id, tok.eot_id) == (0, 1, 2)
    assert tok.vocab_size <= 300
    ids = tok.encode(["A Photo of a CAT.", "zebra ☃"], context_length=12)   # lower-cased; any string encodes
    assert ids.shape == (2, 12) and ids.dtype == torch.int64
    assert ids[0, 0] == tok.sot_id and (ids[1] == tok.eot_id).sum() == 1
    assert torch.equal(ids[0], tok.encode(["a photo of a cat."], 12)[0])
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "tokenizer.json").write_text(tok.to_json())
    for path in (tmp_path / "tok", tmp_path / "tok" / "tokenizer.json"):
        assert torch.equal(TextTokenizer.from_path(path).encode(["zebra ☃"], 12), ids[1:])
    assert train_bpe(CAPTIONS, 300).to_json() == tok.to_json()                # deterministic


def test_truncation_keeps_the_end_of_text_token():
    tok = train_bpe(CAPTIONS, vocab_size=300)
    ids = tok.encode(["a photo of a cat. " * 20], context_length=8)
    assert ids[0, -1] == tok.eot_id and ids[0, 0] == tok.sot_id and (ids[0] != tok.pad_id).all()


def test_bad_tokenizer_files_are_clear_errors(tmp_path):
    with pytest.raises(DeepclustError, match="no tokenizer.json"):
        TextTokenizer.from_path(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{\"not\": \"a tokenizer\"}")
    with pytest.raises(DeepclustError, match="not a valid tokenizer.json"):
        TextTokenizer.from_path(tmp_path)


def test_text_transformer_reads_the_end_of_text_position_under_a_causal_mask():
    torch.manual_seed(0)
    model = TextTransformer(50, eot_id=2, context_length=8, width=16, layers=2, heads=2, embed_dim=6).eval()
    ids = torch.tensor([[1, 7, 8, 9, 2, 0, 0, 0]])
    out = model(ids)
    assert out.shape == (1, 6)
    after = ids.clone()
    after[0, 5:] = torch.tensor([11, 12, 13])          # tokens after end-of-text never reach it
    assert torch.allclose(model(after), out, atol=1e-6)
    before = ids.clone()
    before[0, 2] = 30                                  # a token before it does
    assert not torch.allclose(model(before), out)
    shifted = torch.tensor([[1, 7, 2, 0, 0, 0, 0, 0]])   # the first end-of-text position is used
    loss = model(torch.cat([ids, shifted])).sum()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(DeepclustError, match="text ids must be"):
        model(ids[:, :5])
