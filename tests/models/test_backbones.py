"""Backbones: output shapes at several input sizes, parameter counts against torchvision's
known numbers, ViT position-embedding interpolation, attention weights and patch masks."""

import copy

import pytest
import torch
from torch import nn

from deepclust.models.backbones import (
    BACKBONE_NAMES,
    ResNet,
    SmallCNN,
    UnknownBackboneError,
    VisionTransformer,
    build_backbone,
)

torch.set_num_threads(1)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["small_cnn", "resnet18", "vit_tiny"])
@pytest.mark.parametrize("size", [8, 16, 32])
def test_pooled_output_shape_at_each_size(name, size):
    torch.manual_seed(0)
    model = build_backbone(name, img_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.embed_dim)
    assert torch.isfinite(out).all()
    # Two different images give two different feature vectors.
    assert not torch.allclose(out[0], out[1])


def test_embed_dims():
    expected = {"small_cnn": 256, "resnet18": 512, "resnet34": 512, "resnet50": 2048,
                "vit_tiny": 192, "vit_small": 384}
    for name, dim in expected.items():
        assert build_backbone(name).embed_dim == dim, name


def test_resnet50_forward_at_32px():
    model = build_backbone("resnet50", img_size=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 2048)


def test_parameter_counts_match_torchvision():
    # torchvision resnet18 / resnet50 totals (11,689,512 / 25,557,032) minus the
    # 1000-class fc layer; a wrong block, stride or shortcut changes these numbers.
    assert n_params(build_backbone("resnet18_imagenet")) == 11_176_512
    assert n_params(build_backbone("resnet50_imagenet")) == 23_508_032


def test_resnet_stems_and_map_sizes():
    x = torch.randn(1, 3, 32, 32)
    cifar = build_backbone("resnet18", img_size=32)
    imagenet = build_backbone("resnet18", stem="imagenet")
    assert cifar.stem_kind == "cifar" and build_backbone("resnet18", img_size=224).stem_kind == "imagenet"
    with torch.no_grad():
        assert cifar.eval().forward_maps(x).shape[-2:] == (4, 4)    # 32 / 8
        assert imagenet.eval().forward_maps(x).shape[-2:] == (1, 1)  # 32 / 32
    # The CIFAR stem is a 3x3 conv without max-pool, the ImageNet one 7x7 + max-pool.
    assert cifar.conv1.kernel_size == (3, 3) and isinstance(cifar.maxpool, nn.Identity)
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, nn.MaxPool2d)


def test_zero_init_residual_makes_blocks_start_as_identity_branch():
    model = build_backbone("resnet18", zero_init_residual=True)
    gammas = [blk.bn2.weight for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
              for blk in layer]
    assert len(gammas) == 8 and all((g == 0).all() for g in gammas)
    default = build_backbone("resnet18")
    assert (default.layer1[0].bn2.weight == 1).all()
    bottleneck = build_backbone("resnet50", zero_init_residual=True)
    assert (bottleneck.layer1[0].bn3.weight == 0).all() and (bottleneck.layer1[0].bn2.weight == 1).all()


@pytest.mark.parametrize("name", ["resnet18", "small_cnn", "vit_tiny"])
def test_sobel_input_channels(name):
    model = build_backbone(name, in_chans=2, img_size=16).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 16, 16)).shape == (2, model.embed_dim)
    with pytest.raises(RuntimeError):
        model(torch.randn(2, 3, 16, 16))


def test_small_cnn_pooling_schedule():
    model = SmallCNN(widths=(8, 16, 32))
    with torch.no_grad():
        assert model.eval().forward_maps(torch.randn(1, 3, 8, 8)).shape[-2:] == (2, 2)
        assert model.forward_maps(torch.randn(1, 3, 32, 32)).shape[-2:] == (8, 8)
    assert model.embed_dim == 32
    # Large inputs get a strided stem from build_backbone.
    assert build_backbone("small_cnn", img_size=96).stages[0][0][0].stride == (2, 2)
    assert build_backbone("small_cnn", img_size=32).stages[0][0][0].stride == (1, 1)
    with pytest.raises(ValueError, match="convs_per_stage"):
        SmallCNN(widths=(8, 16), convs_per_stage=(1, 2, 3))


def test_backbones_train_one_step():
    # Gradients reach the first layer of each trunk (no detached path).
    for name in ["small_cnn", "resnet18", "vit_tiny"]:
        torch.manual_seed(0)
        model = build_backbone(name, img_size=16)
        model(torch.randn(4, 3, 16, 16)).pow(2).mean().backward()
        first = next(p for p in model.parameters() if p.ndim == 4)  # the first conv
        assert first.grad is not None and first.grad.abs().sum() > 0, name


def test_channels_last_gives_same_output():
    torch.manual_seed(0)
    model = build_backbone("resnet18", img_size=16).eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    fast.channels_last = True
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    cl = build_backbone("small_cnn", channels_last=True)
    assert cl.stages[1][0][0].weight.is_contiguous(memory_format=torch.channels_last)


def test_unknown_names_and_options_are_rejected_with_the_valid_list():
    with pytest.raises(ValueError, match="resnet18.*vit_small"):
        build_backbone("resnet19")
    with pytest.raises(UnknownBackboneError, match="patch_size"):
        build_backbone("vit_tiny", widths=(8,))
    assert build_backbone("ViT-Tiny").embed_dim == 192  # case and dashes are forgiven
    assert set(BACKBONE_NAMES) >= {"resnet18", "resnet34", "resnet50", "resnet18_imagenet",
                                   "small_cnn", "vit_tiny", "vit_small"}


# ---------------------------------------------------------------- ViT specifics

def tiny_vit(**kw) -> VisionTransformer:
    kw = {"img_size": 32, "patch_size": 4, "embed_dim": 32, "depth": 2, "num_heads": 4, **kw}
    return VisionTransformer(**kw).eval()


def test_vit_default_patch_size_and_sizes():
    vit = build_backbone("vit_tiny", img_size=32)
    assert vit.patch_size == 4 and vit.num_patches == 64
    assert vit.pos_embed.shape == (1, 65, 192)
    assert build_backbone("vit_small", img_size=224).patch_size == 16
    assert build_backbone("vit_tiny", img_size=8).patch_size == 2


def test_vit_local_crop_uses_interpolated_position_embeddings():
    torch.manual_seed(0)
    vit = tiny_vit()
    pos16 = vit.interpolate_pos_encoding(4, 4)
    assert pos16.shape == (1, 17, 32)
    torch.testing.assert_close(pos16[:, 0], vit.pos_embed[:, 0])  # CLS position kept
    # Interpolating a smooth (linear-in-x) grid stays linear: checks the reshape/permute order.
    g = vit.grid_size
    ramp = torch.arange(g, dtype=torch.float32).repeat(g)            # column index per patch
    with torch.no_grad():
        vit.pos_embed[0, 1:, :] = ramp[:, None]
    small = vit.interpolate_pos_encoding(4, 4)[0, 1:, 0].reshape(4, 4)
    assert torch.allclose(small[0], small[3])          # same value down each column
    assert (small[:, 1:] > small[:, :-1]).all()        # increasing left to right
    assert vit.interpolate_pos_encoding(g, g) is vit.pos_embed
    out = vit.forward_features(torch.randn(2, 3, 16, 16))
    assert out["cls"].shape == (2, 32) and out["patch"].shape == (2, 16, 32)


def test_vit_forward_features_shapes_and_cls_equals_forward():
    torch.manual_seed(0)
    vit = tiny_vit()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        feats = vit.forward_features(x)
        assert feats["cls"].shape == (3, 32) and feats["patch"].shape == (3, 64, 32)
        torch.testing.assert_close(vit(x), feats["cls"])


def test_vit_attention_weights_match_fused_path():
    torch.manual_seed(0)
    vit = tiny_vit()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        attn = vit.get_last_selfattention(x)
        assert attn.shape == (2, 4, 65, 65)
        torch.testing.assert_close(attn.sum(-1), torch.ones(2, 4, 65))
        assert (attn >= 0).all()
        # The explicit-softmax attention reproduces the fused SDPA output of the last block.
        tokens = vit.prepare_tokens(x)
        for blk in vit.blocks[:-1]:
            tokens = blk(tokens)
        last = vit.blocks[-1]
        fused, _ = last.attn(last.norm1(tokens))
        b, n, d = tokens.shape
        v = last.attn.qkv(last.norm1(tokens)).reshape(b, n, 3, 4, d // 4)[:, :, 2].transpose(1, 2)
        manual = last.attn.proj((attn @ v).transpose(1, 2).reshape(b, n, d))
        torch.testing.assert_close(fused, manual, rtol=1e-4, atol=1e-5)
        assert vit.get_last_selfattention(torch.randn(1, 3, 16, 16)).shape == (1, 4, 17, 17)


def test_vit_has_a_mask_token_only_when_asked():
    """An unused trainable parameter breaks DDP ("parameters that were not used in producing
    loss"): a plain ViT has none; iBOT asks for the mask token."""
    plain = tiny_vit()
    assert plain.mask_token is None and "mask_token" not in dict(plain.named_parameters())
    with pytest.raises(ValueError, match="mask_token=True"):
        plain.forward_features(torch.randn(1, 3, 32, 32), masks=torch.zeros(1, 64, dtype=torch.bool))
    out = plain(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert all(p.grad is not None for p in plain.parameters())   # every parameter is used
    assert "mask_token" in dict(tiny_vit(mask_token=True).named_parameters())


def test_vit_masks_replace_patches_with_mask_token():
    torch.manual_seed(0)
    vit = tiny_vit(mask_token=True)
    with torch.no_grad():
        vit.mask_token.normal_()
    x = torch.randn(2, 3, 32, 32)
    none = torch.zeros(2, 64, dtype=torch.bool)
    some = none.clone()
    some[0, :10] = True
    with torch.no_grad():
        base = vit.forward_features(x)
        torch.testing.assert_close(vit.forward_features(x, masks=none)["cls"], base["cls"])
        masked = vit.forward_features(x, masks=some)
        assert not torch.allclose(masked["cls"][0], base["cls"][0])
        torch.testing.assert_close(masked["cls"][1], base["cls"][1])  # unmasked sample unchanged
        # A masked patch no longer depends on its pixels.
        x2 = x.clone()
        x2[0, :, :4, :4] += 5.0  # patch 0 of image 0
        tok_a = vit.prepare_tokens(x, some)[0, 1]
        tok_b = vit.prepare_tokens(x2, some)[0, 1]
        torch.testing.assert_close(tok_a, tok_b)
    with pytest.raises(ValueError, match="patch mask"):
        vit.forward_features(x, masks=torch.zeros(2, 63, dtype=torch.bool))


def test_vit_rejects_sizes_not_divisible_by_patch():
    with pytest.raises(ValueError, match="multiple of patch_size"):
        tiny_vit()(torch.randn(1, 3, 30, 30))


def test_vit_init_is_truncated_normal():
    vit = build_backbone("vit_small", img_size=32)
    w = vit.blocks[0].attn.qkv.weight
    # DINO: trunc_normal_(std=0.02) on every Linear (cut at +-2, i.e. hardly truncated), zero bias.
    assert abs(w.std().item() - 0.02) < 0.001 and abs(w.mean().item()) < 0.001
    assert (vit.blocks[0].attn.qkv.bias == 0).all()
    assert abs(vit.pos_embed.std().item() - 0.02) < 0.002


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    vit = tiny_vit(drop_path_rate=0.5)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        a, b = vit(x), vit(x)
        torch.testing.assert_close(a, b)
        vit.train()
        assert not torch.allclose(vit(x), vit(x))
    assert isinstance(build_backbone("vit_tiny"), VisionTransformer)
    assert isinstance(build_backbone("resnet34"), ResNet)
