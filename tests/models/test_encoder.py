"""The one encoder type: pixel, PCA and backbone encoders, and the embedding loop."""

import numpy as np
import torch

from deepclust.attention import cls_attention_maps
from deepclust.data.views import EvalTransform
from deepclust.models.backbones import build_backbone
from deepclust.models.encoder import BackboneEncoder, PixelEncoder, embed_images, embed_with_head


def _images(n=6, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_pixel_encoder_is_flattened_unit_pixels():
    images = _images(3, 8)
    out = embed_images(PixelEncoder(8), images)
    np.testing.assert_allclose(out, images.reshape(3, -1) / 255.0, rtol=0, atol=1e-7)


def test_backbone_encoder_counts_register_tokens_before_the_patches():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", img_size=16, patch_size=4, depth=2, num_register_tokens=2)
    encoder = BackboneEncoder(vit, EvalTransform(16, "half"), name="vit+registers")
    assert encoder.patch_size == 4 and encoder.num_prefix_tokens == 3 and encoder.has_attention
    maps = cls_attention_maps(encoder, _images(2))
    assert maps.shape == (2, vit.num_heads, 4, 4)                      # registers are not patches
    assert np.all(maps.sum(axis=(2, 3)) < 1.0)                         # part of the row goes to CLS/registers


def test_embed_with_head_is_one_pass_with_the_heads_outputs():
    torch.manual_seed(0)
    trunk = build_backbone("small_cnn", img_size=16)
    encoder = BackboneEncoder(trunk, EvalTransform(16, "half"))
    head = torch.nn.Linear(encoder.embed_dim, 3)
    emb, logits = embed_with_head(encoder, _images(5), head=head, batch_size=2)
    assert emb.shape == (5, encoder.embed_dim) and logits is not None and logits.shape == (5, 3)
    np.testing.assert_allclose(logits, head(torch.from_numpy(emb)).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert encoder.training and head.training                          # train mode restored


def test_backbone_encoder_pooling_cls_mean_and_both_share_the_trunk():
    import pytest

    from deepclust.errors import DeepclustError

    torch.manual_seed(0)
    vit = build_backbone("vit_tiny", img_size=16, patch_size=4, embed_dim=24, depth=1, num_heads=2)
    cls = BackboneEncoder(vit, EvalTransform(16, "half"))
    both = cls.with_pooling("cls+mean")
    mean = cls.with_pooling("mean")
    assert cls.with_pooling("cls") is cls and both.trunk is vit and both.transform is cls.transform
    assert (cls.embed_dim, mean.embed_dim, both.embed_dim) == (24, 24, 48)
    images = _images(3)
    x = cls.preprocess(torch.from_numpy(images))
    with torch.no_grad():
        tokens = vit.forward_features(x)
        torch.testing.assert_close(cls(x), tokens["cls"])
        torch.testing.assert_close(mean(x), tokens["patch"].mean(1))
        torch.testing.assert_close(both(x), torch.cat([tokens["cls"], tokens["patch"].mean(1)], 1))
    assert embed_images(both, images).shape == (3, 48)
    with pytest.raises(DeepclustError, match="patch tokens"):
        BackboneEncoder(build_backbone("small_cnn", img_size=16), EvalTransform(16, "half"), pooling="mean")
    with pytest.raises(DeepclustError, match="unknown pooling"):
        cls.with_pooling("max")
