"""Pretrained DINOv2 / CLIP loading, preprocessing, features and the offline failure path.

Tiny random-weight models are saved with ``save_pretrained`` and loaded through the real
``hf:<dir>`` code (see tests/pretrained_fixtures.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from deepclust.errors import DeepclustError, ModelNotAvailableError
from deepclust.models.pretrained import ClipEncoder, Dinov2Encoder, load_clip, load_pretrained, resolve_model_dir
from deepclust.models.pretrained.preprocess import ImagePreprocess
from pretrained_fixtures import colour_images_dir, tiny_clip_dir, tiny_dinov2_dir  # noqa: F401 (fixtures)


def _smooth_images(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Natural-looking (smooth) images: PIL and torch bicubic agree to a grey level on them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        f = rng.uniform(3, 9, size=(3, 2))
        img = np.stack([127 + 110 * np.sin(xx / f[c, 0] + c) * np.cos(yy / f[c, 1]) for c in range(3)], -1)
        out.append(img.clip(0, 255).astype(np.uint8))
    return np.stack(out)


@pytest.mark.parametrize("hw", [(32, 32), (45, 70), (120, 90)])
def test_preprocessing_matches_hf_image_processors(hw):
    from transformers import BitImageProcessor, CLIPImageProcessor

    processors = [
        CLIPImageProcessor(),  # shortest edge 224, crop 224, CLIP mean/std
        BitImageProcessor(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224},
                          image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]),  # DINOv2
        CLIPImageProcessor(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32}),
    ]
    images = _smooth_images(2, *hw)
    for proc in processors:
        ref = proc(images=list(images), return_tensors="pt")["pixel_values"]
        ours = ImagePreprocess.from_config(proc.to_dict())(images)
        assert ours.shape == ref.shape
        # One grey level (PIL's fixed-point resampling rounds differently) in normalised units.
        one_level = 1.01 / 255 / min(proc.image_std)
        assert torch.allclose(ours, ref, atol=one_level, rtol=0), float((ours - ref).abs().max())
        assert float((ours - ref).abs().mean()) < one_level / 2


def test_load_tiny_models_and_pooling_shapes(tiny_dinov2_dir, tiny_clip_dir):
    images = _smooth_images(5, 24, 24)
    dino = load_pretrained(f"hf:{tiny_dinov2_dir}")
    clip = load_pretrained(f"hf:{tiny_clip_dir}")
    assert isinstance(dino, Dinov2Encoder) and isinstance(clip, ClipEncoder)
    assert dino.embed(images, pooling="cls").shape == (5, 32)
    assert dino.embed(images, pooling="mean").shape == (5, 32)
    both = dino.embed(images, pooling="both", batch_size=2)
    assert both.shape == (5, 64) and both.dtype == np.float32
    # "both" is the concatenation, and batching does not change the result.
    np.testing.assert_allclose(both[:, :32], dino.embed(images, pooling="cls"), atol=1e-5)
    np.testing.assert_allclose(both[:, 32:], dino.embed(images, pooling="mean"), atol=1e-5)
    # CLIP cls = projected image embedding (projection_dim 16), mean = patch tokens (32).
    assert clip.embed(images, pooling="cls").shape == (5, 16)
    assert clip.embed(images, pooling="mean").shape == (5, 32)
    with pytest.raises(DeepclustError, match="pooling"):
        dino.embed(images, pooling="max")


def test_dinov2_features_equal_hf_model_output(tiny_dinov2_dir):
    from transformers import AutoImageProcessor, Dinov2Model

    images = _smooth_images(3, 40, 40, seed=3)
    ours = load_pretrained(f"hf:{tiny_dinov2_dir}").embed(images, pooling="cls")
    model = Dinov2Model.from_pretrained(str(tiny_dinov2_dir)).eval()
    proc = AutoImageProcessor.from_pretrained(str(tiny_dinov2_dir))
    with torch.no_grad():
        ref = model(**proc(images=list(images), return_tensors="pt")).pooler_output.numpy()
    np.testing.assert_allclose(ours, ref, atol=0.05)


def test_clip_cls_is_get_image_features(tiny_clip_dir):
    from transformers import CLIPModel

    images = _smooth_images(2, 32, 32, seed=4)
    clip = load_clip(f"hf:{tiny_clip_dir}")
    ours = clip.embed(images, pooling="cls")
    model = CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()
    with torch.no_grad():
        out = model.get_image_features(pixel_values=clip.pixel_values(images))
    ref = out if torch.is_tensor(out) else out.pooler_output
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_load_clip_rejects_a_dinov2_model(tiny_dinov2_dir):
    with pytest.raises(ModelNotAvailableError, match="CLIP"):
        load_clip(f"hf:{tiny_dinov2_dir}")


def test_missing_local_folder_and_unsupported_model(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="does not exist"):
        resolve_model_dir(f"hf:{tmp_path / 'nope'}")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotAvailableError, match="supported"):
        load_pretrained(f"hf:{tmp_path}")


def _offline_env(tmp_path, **extra) -> dict:
    env = dict(os.environ)
    env.update(HF_HOME=str(tmp_path / "hf_home"), HF_HUB_CACHE=str(tmp_path / "hf_home" / "hub"),
               DEEPCLUST_CACHE=str(tmp_path / "dc_cache"), **extra)
    return env


def test_cluster_with_uncached_hub_model_fails_fast_offline(tmp_path, colour_images_dir):
    """Acceptance: no network, no local copy -> a clear message within seconds, exit code 2."""
    env = _offline_env(tmp_path, HF_HUB_OFFLINE="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deepclust", "cluster", str(colour_images_dir),
                           "--k", "3", "--model", "hf:facebook/dinov2-small", "--out", str(tmp_path / "out")],
                          env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert "facebook/dinov2-small" in proc.stderr
    assert "huggingface-cli download facebook/dinov2-small" in proc.stderr
    assert "hf:/path/to" in proc.stderr and "Traceback" not in proc.stderr
    assert elapsed < 60  # generous bound for a loaded 2-core machine; it takes a few seconds


def test_unreachable_hub_becomes_model_not_available(tmp_path, monkeypatch):
    """Not offline, not cached, hub unreachable (closed local port): converted, not raised raw."""
    import huggingface_hub.constants as constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    with pytest.raises(ModelNotAvailableError, match="huggingface-cli download someone/some-model") as info:
        resolve_model_dir("hf:someone/some-model")
    assert "could not be downloaded" in str(info.value)  # the network path, not the offline one
    assert time.monotonic() - start < 60


def test_missing_transformers_gives_install_hint(tiny_dinov2_dir, monkeypatch):
    import deepclust.models.pretrained as pretrained

    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    monkeypatch.setattr(pretrained, "_LOADED", {})
    with pytest.raises(ModelNotAvailableError, match=r"pip install 'deepclust\[pretrained\]'"):
        load_pretrained(f"hf:{tiny_dinov2_dir}")
    with pytest.raises(ModelNotAvailableError, match=r"deepclust\[pretrained\]"):
        resolve_model_dir("hf:facebook/dinov2-small")


def test_resolution_option_changes_input_size_only(tiny_dinov2_dir):
    base = load_pretrained(f"hf:{tiny_dinov2_dir}")
    small = load_pretrained(f"hf:{tiny_dinov2_dir}", resolution=16)
    images = _smooth_images(2, 40, 40)
    assert tuple(small.pixel_values(images).shape) == (2, 3, 16, 16)
    assert tuple(base.pixel_values(images).shape) == (2, 3, 32, 32)   # the cached encoder is untouched
    assert small.model is base.model and small.embed(images).shape == (2, 32)
