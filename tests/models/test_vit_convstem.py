"""The ViT with a convolutional stem (Xiao et al., 2021): shapes, strides, masking of the
stem's tokens, and the build_backbone registration."""

import pytest
import torch
from torch import nn

from deepclust.models.backbones import BACKBONE_NAMES, ConvStemViT, UnknownBackboneError, build_backbone
from deepclust.models.backbones.vit_convstem import ConvStem


def test_stem_strides_multiply_to_the_patch_size_and_channels_double_per_stride():
    stem = ConvStem(4, 3, 48, width=8)
    convs = [m for m in stem.proj if isinstance(m, nn.Conv2d)]
    assert [c.stride[0] for c in convs] == [2, 2, 1]                 # two stride-2 3x3, then the 1x1
    assert [c.out_channels for c in convs] == [8, 16, 48]
    assert [c.kernel_size[0] for c in convs] == [3, 3, 1]
    assert stem(torch.randn(2, 3, 16, 16)).shape == (2, 16, 48)     # a 4x4 grid of tokens
    two = ConvStem(2, 3, 32, width=8)                                # p = 2: a stride-1 conv first
    assert [c.stride[0] for c in two.proj if isinstance(c, nn.Conv2d)] == [1, 2, 1]
    with pytest.raises(ValueError, match="power-of-two"):
        ConvStem(3, 3, 32)
    with pytest.raises(ValueError, match="multiple of patch_size"):
        stem(torch.randn(1, 3, 10, 10))


def test_convstem_vit_is_a_vit_whose_stem_tokens_are_masked():
    torch.manual_seed(0)
    vit = build_backbone("vit_tiny_convstem", img_size=8, embed_dim=32, depth=2, num_heads=2, patch_size=2,
                         stem_width=8)
    assert isinstance(vit, ConvStemViT) and isinstance(vit.patch_embed, ConvStem)
    assert vit.patch_size == 2 and vit.num_patches == 16 and vit.embed_dim == 32
    x = torch.randn(3, 3, 8, 8)
    vit.eval()
    feats = vit.forward_features(x)
    assert feats["cls"].shape == (3, 32) and feats["patch"].shape == (3, 16, 32)
    torch.testing.assert_close(vit(x), feats["cls"])
    token = vit.enable_mask_token()
    with torch.no_grad():
        token.fill_(3.0)
    masks = torch.zeros(3, 16, dtype=torch.bool)
    masks[0, :5] = True
    tokens = vit.prepare_tokens(x, masks)
    pos = vit.interpolate_pos_encoding(4, 4)
    torch.testing.assert_close(tokens[0, 1:6], (token + pos[:, 1:6])[0].expand(5, -1))
    torch.testing.assert_close(tokens[1], vit.prepare_tokens(x)[1])  # unmasked images unchanged
    assert vit.get_last_selfattention(x).shape == (3, 2, 17, 17)


def test_convstem_names_and_options():
    assert {"vit_tiny_convstem", "vit_small_convstem"} <= set(BACKBONE_NAMES)
    assert build_backbone("vit_small_convstem", img_size=8, depth=1).embed_dim == 384
    with pytest.raises(UnknownBackboneError, match="stem_width"):
        build_backbone("vit_tiny_convstem", widths=(8,))
    every_param_gets_a_gradient = build_backbone("vit_tiny_convstem", img_size=8, embed_dim=16, depth=1,
                                                 num_heads=2, patch_size=2, stem_width=4)
    every_param_gets_a_gradient(torch.randn(4, 3, 8, 8)).sum().backward()
    assert all(p.grad is not None for p in every_param_gets_a_gradient.parameters())
