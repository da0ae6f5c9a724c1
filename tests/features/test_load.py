"""`load_model`: every model source becomes one `Encoder`; `embed_store` embeds once and caches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from deepclust.data.store import ImageStore
from deepclust.errors import DataError, DeepclustError
from deepclust.features import embed_store, is_run_dir, load_model
from deepclust.models.encoder import BackboneEncoder, Encoder, embed_images
from deepclust.models.pretrained import ClipEncoder, Dinov2Encoder, load_pretrained
from pretrained_fixtures import tiny_clip_dir, tiny_dinov2_dir  # noqa: F401 (fixtures)

torch.set_num_threads(1)


def _store(n=12, size=16, seed=0, source_id="load-test") -> ImageStore:
    images = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    return ImageStore(images=images, paths=[f"a#{i}" for i in range(n)], labels=None, class_names=None,
                      skipped=[], source_id=source_id)


def make_run(run_dir, *, k=3, whiten=2, out_dim=3):
    """A run directory (config.json + model.safetensors + state.json) of an untrained tiny DINO."""
    from deepclust.train.builder import build_method_from_config
    from deepclust.train.checkpoint import get_rng_states, save_checkpoint
    from deepclust.train.config import TrainConfig

    cfg = TrainConfig(method="dino", backbone="small_cnn", backbone_kwargs={"widths": [8, 16], "convs_per_stage": 1},
                      image_size=16, k=k, cluster_whiten_dim=whiten,
                      method_kwargs={"out_dim": out_dim, "hidden_dim": 16, "bottleneck_dim": 8})
    torch.manual_seed(0)
    method = build_method_from_config(cfg)
    save_checkpoint(run_dir, method=method, optimizer=torch.optim.SGD(method.parameters(), lr=0.1),
                    config=cfg.to_dict(), epoch=1, step=1, rng=get_rng_states())
    return run_dir


@pytest.mark.parametrize("fixture, cls, dim",
                         [("tiny_dinov2_dir", Dinov2Encoder, 32), ("tiny_clip_dir", ClipEncoder, 16)])
def test_hugging_face_folder_needs_no_prefix(request, fixture, cls, dim):
    folder = request.getfixturevalue(fixture)
    bare, prefixed = load_model(str(folder), device="cpu"), load_model(f"hf:{folder}", device="cpu")
    assert bare.kind == prefixed.kind == "hf" and not is_run_dir(folder)
    assert isinstance(bare.encoder, cls) and isinstance(bare.encoder, Encoder) and isinstance(bare.encoder, nn.Module)
    assert bare.encoder.embed_dim == dim and bare.max_size == 224 and bare.head is None and bare.config is None
    images = _store(4, 24).images
    np.testing.assert_array_equal(embed_images(bare.encoder, images), embed_images(prefixed.encoder, images))
    assert bare.identity == prefixed.identity  # the same files: one cache entry


def test_pretrained_encoder_is_an_nn_module_frozen_by_default_and_trainable(tiny_dinov2_dir):
    encoder = load_model(str(tiny_dinov2_dir), pooling="both", shared=False, device="cpu").encoder
    assert encoder.model is not load_pretrained(str(tiny_dinov2_dir)).model  # a private copy
    assert encoder.embed_dim == 64 and not any(p.requires_grad for p in encoder.parameters())
    x = encoder.preprocess(torch.from_numpy(_store(2, 24).images))
    assert tuple(x.shape) == (2, 3, 32, 32)
    tokens = encoder.forward_tokens(x)
    assert tuple(tokens["cls"].shape) == (2, 32) and tuple(tokens["patch"].shape) == (2, 16, 32)
    torch.testing.assert_close(encoder(x), torch.cat([tokens["cls"], tokens["patch"].mean(1)], 1))
    assert tuple(encoder.last_selfattention(x).shape) == (2, 2, 17, 17) and encoder.has_attention
    encoder.requires_grad_(True).train()
    encoder(x).pow(2).sum().backward()
    assert float(encoder.model.layernorm.weight.grad.abs().sum()) > 0
    assert float(encoder.model.embeddings.patch_embeddings.projection.weight.grad.abs().sum()) > 0


def test_run_directory_gives_encoder_head_config_and_whitening(tmp_path, monkeypatch):
    from deepclust.train.config import TrainConfig

    run = make_run(tmp_path / "run")
    reads = []
    original = TrainConfig.from_dict.__func__
    monkeypatch.setattr(TrainConfig, "from_dict", classmethod(lambda cls, d: reads.append(1) or original(cls, d)))
    loaded = load_model(str(run), device="cpu")
    assert len(reads) == 1  # config.json is read once
    assert loaded.kind == "run" and isinstance(loaded.encoder, BackboneEncoder)
    assert loaded.config.k == 3 and loaded.image_size == 16 and loaded.encoder.whiten_dim == 2
    assert loaded.head is not None and loaded.method is not None
    store = _store(10, 16)
    first = embed_store(loaded, store, progress=False)
    assert first.features.shape == (10, loaded.encoder.embed_dim) and first.logits.shape == (10, 3)
    np.testing.assert_allclose(first.logits, loaded.head(torch.from_numpy(first.features)).detach().numpy(), atol=1e-5)
    again = embed_store(loaded, store, progress=False)
    assert again.cached and not first.cached
    np.testing.assert_array_equal(again.logits, first.logits)
    with pytest.raises(DataError, match="trained on 16px"):
        embed_store(loaded, _store(4, 8), progress=False)
    # Re-saving the weights (retraining) changes the identity: no stale cache.
    stamp = loaded.identity
    (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes() + b"")
    import os
    os.utime(run / "model.safetensors", ns=(1, 1))
    assert load_model(str(run), device="cpu").identity != stamp


def test_embed_store_caches_by_store_model_and_options(tiny_dinov2_dir, monkeypatch):
    calls = []
    original = Dinov2Encoder.tokens
    monkeypatch.setattr(Dinov2Encoder, "tokens",
                        lambda self, x, masks=None: calls.append(len(x)) or original(self, x, masks))
    store = _store(6, 24)
    cls = load_model(str(tiny_dinov2_dir), device="cpu")
    first = embed_store(cls, store, progress=False)
    assert sum(calls) == 6 and not first.cached
    assert embed_store(load_model(str(tiny_dinov2_dir), device="cpu"), store, progress=False).cached
    assert sum(calls) == 6  # a second command with another k embeds nothing
    embed_store(load_model(str(tiny_dinov2_dir), device="cpu", pooling="mean"), store, progress=False)
    embed_store(cls, _store(6, 24, source_id="other"), progress=False)
    assert sum(calls) == 18  # another pooling or another store: embedded again
    embed_store(cls, store, cache=False, progress=False)
    assert sum(calls) == 24


def test_user_module_and_pixel_baselines():
    class Mean(nn.Module):
        embed_dim = 3

        def forward(self, x):
            return x.mean(dim=(2, 3))

    store = _store(5, 8)
    loaded = load_model(Mean(), device="cpu")
    assert loaded.kind == "module" and loaded.identity is None  # never cached
    np.testing.assert_allclose(embed_store(loaded, store).features, store.images.mean(axis=(1, 2)) / 255, atol=1e-6)
    raw = load_model("raw", image_size=8)
    assert not raw.spherical and embed_store(raw, store).features.shape == (5, 192)
    pca = load_model("pca", image_size=8, pca_dim=3)
    assert embed_store(pca, store).features.shape == (5, 3) and pca.encoder.fitted
    with pytest.raises(DeepclustError, match="image size"):
        load_model("raw")
    with pytest.raises(DeepclustError, match="embed_dim"):
        load_model(nn.Identity())


def test_a_config_json_that_is_neither_a_run_nor_a_model_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"epochs": 3}))
    with pytest.raises(DeepclustError, match="neither a training run"):
        load_model(str(tmp_path))
    with pytest.raises(DeepclustError, match="unknown model spec 'no-such-thing'"):
        load_model("no-such-thing")
