"""Attention maps (HF DINOv2 / CLIP and our own ViT) and DINO's attention-mass masks."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.attention import attention_mask, attention_overlays_for, cls_attention_maps, cluster_attention_extras
from deepclust.cli import main
from deepclust.errors import DeepclustError
from deepclust.models.pretrained import load_pretrained
from pretrained_fixtures import colour_images_dir, tiny_clip_dir, tiny_dinov2_dir  # noqa: F401


@pytest.mark.parametrize("mass", [0.1, 0.6, 0.9, 1.0])
def test_mask_keeps_requested_mass_and_is_minimal(mass):
    rng = np.random.default_rng(0)
    maps = rng.dirichlet(np.ones(49) * 0.3, size=(5, 3)).reshape(5, 3, 7, 7)  # sharp and flat maps
    maps[0, 0] *= 0.4  # a map that does not sum to one (CLS also attends to itself)
    mask = attention_mask(maps, mass)
    assert mask.shape == maps.shape and mask.dtype == bool
    for m, k in zip(maps.reshape(-1, 49), mask.reshape(-1, 49)):
        total = m.sum()
        assert m[k].sum() >= mass * total - 1e-12
        # Minimal: dropping the smallest kept cell falls below the target...
        assert m[k].sum() - m[k].min() < mass * total
        # ...and every kept cell is at least as large as every dropped one (top cells first).
        if (~k).any():
            assert m[k].min() >= m[~k].max()


def test_mask_rejects_bad_input():
    with pytest.raises(DeepclustError, match="mass"):
        attention_mask(np.ones((2, 2)), 0.0)
    with pytest.raises(DeepclustError, match="non-negative"):
        attention_mask(-np.ones((2, 2)), 0.5)


def test_dinov2_cls_attention_matches_hf_attentions(tiny_dinov2_dir):
    from transformers import Dinov2Model

    encoder = load_pretrained(f"hf:{tiny_dinov2_dir}", attentions=True)
    images = np.random.default_rng(1).integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    maps = cls_attention_maps(encoder, images, batch_size=2)
    assert maps.shape == (3, 2, 4, 4)                       # 2 heads, 32/8 = 4x4 patches
    assert (maps >= 0).all() and (maps.sum(axis=(2, 3)) <= 1 + 1e-5).all()
    model = Dinov2Model.from_pretrained(str(tiny_dinov2_dir), attn_implementation="eager").eval()
    with torch.no_grad():
        attn = model(pixel_values=encoder.pixel_values(images), output_attentions=True).attentions[-1]
    np.testing.assert_allclose(maps, attn[:, :, 0, 1:].reshape(3, 2, 4, 4).numpy(), atol=1e-6)


def test_clip_vision_attention_and_own_vit(tiny_clip_dir):
    from deepclust.models.backbones import build_backbone

    images = np.random.default_rng(2).integers(0, 256, size=(2, 32, 32, 3), dtype=np.uint8)
    clip = load_pretrained(f"hf:{tiny_clip_dir}", attentions=True)
    assert cls_attention_maps(clip, images).shape == (2, 2, 4, 4)
    vit = build_backbone("vit_tiny", in_chans=3, img_size=32, depth=2, patch_size=8).eval()
    maps = cls_attention_maps(vit, images)
    assert maps.shape == (2, vit.num_heads, 4, 4)
    np.testing.assert_allclose(maps.sum(axis=(2, 3)), 1 - _cls_self_attention(vit, images), atol=1e-5)


def _cls_self_attention(vit, images) -> np.ndarray:
    from deepclust.data.views import to_float_tensor
    with torch.no_grad():
        return vit.get_last_selfattention(to_float_tensor(images))[:, :, 0, 0].numpy()


def test_overlays_are_pngs(tiny_dinov2_dir):
    encoder = load_pretrained(f"hf:{tiny_dinov2_dir}", attentions=True)
    images = np.random.default_rng(3).integers(0, 256, size=(4, 24, 24, 3), dtype=np.uint8)
    pngs = attention_overlays_for(images, encoder)
    assert len(pngs) == 4
    first = Image.open(io.BytesIO(pngs[0]))
    assert first.format == "PNG" and first.size[0] > 3 * first.size[1] - 20  # three panels side by side
    extras = cluster_attention_extras(images, np.array([0, 1, 1, 1]), encoder, per_cluster=2)
    assert sorted(extras) == [0, 1] and len(extras[0]) == 1 and len(extras[1]) == 2
    assert all(isinstance(c, str) and p[:8] == b"\x89PNG\r\n\x1a\n" for c, p in extras[1])


def test_attention_command_writes_overlays_and_masks(tmp_path, tiny_dinov2_dir, colour_images_dir):
    out = tmp_path / "attn"
    assert main(["attention", str(colour_images_dir), "--model", f"hf:{tiny_dinov2_dir}",
                 "--out", str(out), "--limit", "2", "--mass", "0.5", "--quiet"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["0000_heads.png", "0000_mask.png", "0000_overlay.png",
                     "0001_heads.png", "0001_mask.png", "0001_overlay.png", "index.html"]
    assert "0001_mask.png" in (out / "index.html").read_text()
    for name in names[:-1]:
        assert Image.open(out / name).format == "PNG"
    assert main(["attention", str(colour_images_dir), "--model", f"hf:{tiny_dinov2_dir}",
                 "--out", str(out), "--mass", "1.5"]) == 2


def test_attention_command_with_a_trained_vit_run(tmp_path, colour_images_dir):
    """A run directory (config.json + model.safetensors) with a ViT backbone works too; its
    images are decoded at the size it was trained on (16 px -> a 2x2 grid of 8 px patches)."""
    from deepclust.train.builder import build_method_from_config
    from deepclust.train.checkpoint import get_rng_states, save_checkpoint
    from deepclust.train.config import TrainConfig

    cfg = TrainConfig(method="swav", backbone="vit_tiny", backbone_kwargs={"depth": 1, "patch_size": 8},
                      image_size=16, k=3)
    method = build_method_from_config(cfg)
    save_checkpoint(tmp_path / "run", method=method, optimizer=torch.optim.SGD(method.parameters(), lr=0.1),
                    config=cfg.to_dict(), epoch=1, step=1, rng=get_rng_states())
    out = tmp_path / "attn"
    assert main(["attention", str(colour_images_dir), "--model", str(tmp_path / "run"),
                 "--out", str(out), "--limit", "1", "--quiet"]) == 0
    assert Image.open(out / "0000_mask.png").format == "PNG"
    assert main(["attention", str(colour_images_dir), "--model", str(tmp_path / "run"),
                 "--size", "24", "--out", str(out), "--quiet"]) == 2   # wrong size: clear error
