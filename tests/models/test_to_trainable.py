"""A Hugging Face DINOv2 / DINOv2-with-registers / CLIP vision tower mapped into deepclust's ViT
gives the Hugging Face outputs (CLS and patch tokens), at the native size and interpolated."""

from __future__ import annotations

import json

import pytest
import torch

from deepclust.errors import ModelNotAvailableError
from deepclust.models.backbones import VisionTransformer
from deepclust.models.pretrained.to_trainable import (
    copy_hf_weights,
    hf_vit_spec,
    load_hf_into_vit,
    load_hf_vision_tower,
)
from pretrained_fixtures import tiny_trainable_dirs  # noqa: F401 (fixture)


def hf_tokens(mtype: str, hf, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLS and patch tokens as `Dinov2Encoder` / the CLIP vision tower define them."""
    if mtype == "clip":
        out = hf(pixel_values=x, interpolate_pos_encoding=True)
        return out.pooler_output, hf.post_layernorm(out.last_hidden_state[:, 1:])
    hidden = hf(pixel_values=x).last_hidden_state
    prefix = 1 + int(getattr(hf.config, "num_register_tokens", 0) or 0)
    return hidden[:, 0], hidden[:, prefix:]


@pytest.mark.parametrize("mtype", ["dinov2", "dinov2_with_registers", "clip"])
def test_mapped_vit_equals_the_hf_tower(tiny_trainable_dirs, mtype):  # noqa: F811
    torch.manual_seed(0)
    spec = f"hf:{tiny_trainable_dirs[mtype]}"
    info = hf_vit_spec(spec)
    assert info.model_type == mtype and info.patch_size == 8 and info.image_size == 32
    vit = VisionTransformer(img_size=info.image_size, **info.vit_kwargs).eval()
    load_hf_into_vit(spec, vit)
    _, hf = load_hf_vision_tower(spec)
    for size in (32, 16, 48):  # native grid, and position embeddings interpolated down / up
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            ours = vit.forward_features(x)
            cls, patch = hf_tokens(mtype, hf, x)
        torch.testing.assert_close(ours["cls"], cls, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ours["patch"], patch, rtol=1e-5, atol=1e-5)
        assert ours["patch"].shape[1] == (size // 8) ** 2
    # the architecture read from the configs is the model's own
    kw = info.vit_kwargs
    if mtype == "clip":
        assert kw["act"] == "quick_gelu" and kw["pre_norm"] and not kw["patch_bias"] and kw["norm_eps"] == 1e-5
        assert info.mean[0] == pytest.approx(0.48145466)
    else:
        assert kw["layerscale_init"] and kw["num_register_tokens"] == (2 if "registers" in mtype else 0)
        assert kw["pos_antialias"] == ("registers" in mtype)


def test_mismatched_vit_is_a_clear_error(tiny_trainable_dirs):  # noqa: F811
    spec = f"hf:{tiny_trainable_dirs['dinov2']}"
    info = hf_vit_spec(spec)
    mtype, hf = load_hf_vision_tower(spec)
    wider = VisionTransformer(img_size=32, **{**info.vit_kwargs, "embed_dim": 64, "num_heads": 2})
    with pytest.raises(ModelNotAvailableError, match="mismatched backbone"):
        copy_hf_weights(mtype, hf, wider)
    deeper = VisionTransformer(img_size=32, **{**info.vit_kwargs, "depth": 3})
    with pytest.raises(ModelNotAvailableError, match="3"):
        copy_hf_weights(mtype, hf, deeper)


def test_unsupported_model_type_names_what_is_supported(tmp_path):
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelNotAvailableError, match="dinov2.*clip"):
        hf_vit_spec(f"hf:{folder}")
