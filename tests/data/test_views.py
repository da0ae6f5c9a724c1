"""Batch views: conversion, normalisation, multi-crop sizes/ranges/randomness, Sobel
against a direct computation, the evaluation transform and recipe configs."""

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from deepclust.data.views import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    EvalTransform,
    MultiCropAugment,
    Sobel,
    ViewConfigError,
    blur_kernel_size,
    normalize,
    resolve_normalization,
    to_float_tensor,
)
from deepclust.errors import DeepclustError

torch.set_num_threads(1)


def random_images(n=8, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, size, size, 3), dtype=torch.uint8, generator=g)


# Everything off except what a test switches on.
PLAIN = dict(global_scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=False, color_jitter=None,
             grayscale_p=0.0, blur_p=0.0, solarize_p=0.0, mean="none")


def test_to_float_tensor_layout_and_range():
    imgs = random_images(2, 4)
    x = to_float_tensor(imgs)
    assert x.shape == (2, 3, 4, 4) and x.dtype == torch.float32
    torch.testing.assert_close(x[1, 2, 3, 0], imgs[1, 3, 0, 2].float() / 255)
    # Read-only numpy arrays (memory-mapped stores) work without a warning.
    arr = imgs.numpy().copy()
    arr.setflags(write=False)
    torch.testing.assert_close(to_float_tensor(arr), x)
    with pytest.raises(DeepclustError, match="uint8"):
        to_float_tensor(imgs.float())
    with pytest.raises(DeepclustError, match=r"\(B, H, W, 3\)"):
        to_float_tensor(imgs.permute(0, 3, 1, 2).contiguous())


def test_normalize_and_named_statistics():
    x = torch.rand(2, 3, 4, 4)
    y = normalize(x, CIFAR10_MEAN, CIFAR10_STD)
    torch.testing.assert_close(y[:, 1], (x[:, 1] - CIFAR10_MEAN[1]) / CIFAR10_STD[1])
    assert resolve_normalization("cifar10") == (CIFAR10_MEAN, CIFAR10_STD)
    assert resolve_normalization("digits") == ((0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="cifar10"):
        resolve_normalization("cifar11")
    with pytest.raises(ValueError, match="std"):
        resolve_normalization([0.1, 0.2, 0.3])


def test_number_and_sizes_of_crops():
    aug = MultiCropAugment(n_global=2, global_size=32, n_local=4, local_size=16)
    views = aug(random_images(3))
    assert len(views) == aug.n_views == 6
    assert [tuple(v.shape) for v in views] == [(3, 3, 32, 32)] * 2 + [(3, 3, 16, 16)] * 4
    assert all(v.dtype == torch.float32 for v in views)
    sobel_views = MultiCropAugment(n_global=1, global_size=8, sobel=True)(random_images(2, 8))
    assert len(sobel_views) == 1 and sobel_views[0].shape == (2, 2, 8, 8)


def test_values_in_expected_range():
    torch.manual_seed(0)
    raw = MultiCropAugment(n_local=2, mean="none")(random_images())
    assert all(v.min() >= 0.0 and v.max() <= 1.0 for v in raw)
    norm = MultiCropAugment(mean="cifar10")(random_images())
    lo = (0 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    hi = (1 - torch.tensor(CIFAR10_MEAN)) / torch.tensor(CIFAR10_STD)
    for v in norm:
        assert (v.amin(dim=(0, 2, 3)) >= lo - 1e-5).all() and (v.amax(dim=(0, 2, 3)) <= hi + 1e-5).all()
        assert v.min() < 0  # normalisation happened


def test_same_seed_same_views_other_seed_different():
    aug = MultiCropAugment(n_local=2)
    imgs = random_images()
    torch.manual_seed(123)
    a = aug(imgs)
    torch.manual_seed(123)
    b = aug(imgs)
    torch.manual_seed(124)
    c = aug(imgs)
    for va, vb in zip(a, b):
        torch.testing.assert_close(va, vb)
    assert not torch.allclose(a[0], c[0])
    assert not torch.allclose(a[0], a[1])  # the two global views differ


def test_full_crop_without_other_steps_is_identity():
    imgs = random_images(4)
    (view,) = MultiCropAugment(n_global=1, **PLAIN)(imgs)
    torch.testing.assert_close(view, to_float_tensor(imgs), atol=1e-5, rtol=0)


def test_flip_flips_some_images_and_leaves_others():
    torch.manual_seed(0)
    imgs = random_images(32)
    x = to_float_tensor(imgs)
    (view,) = MultiCropAugment(n_global=1, **{**PLAIN, "flip": True})(imgs)
    same = [(view[i] - x[i]).abs().max().item() < 1e-5 for i in range(32)]
    flipped = [(view[i] - x[i].flip(-1)).abs().max().item() < 1e-5 for i in range(32)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 4 <= sum(flipped) <= 28


def test_random_crops_cover_part_of_the_image():
    torch.manual_seed(0)
    # A horizontal ramp: a crop of a smaller area spans a smaller range of values.
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    imgs = ramp.view(1, 1, 32, 1).expand(16, 32, 32, 3).contiguous()
    (local,) = MultiCropAugment(n_global=1, global_size=16, global_scale=(0.05, 0.14),
                                **{k: v for k, v in PLAIN.items() if k != "global_scale"})(imgs)
    spans = local[:, 0].amax(dim=(1, 2)) - local[:, 0].amin(dim=(1, 2))
    assert (spans < 0.75).all() and spans.std() > 0  # smaller than the full 0..1, and varied


def test_grayscale_and_solarize_when_always_on():
    imgs = random_images(4)
    (gray,) = MultiCropAugment(n_global=1, **{**PLAIN, "grayscale_p": 1.0})(imgs)
    torch.testing.assert_close(gray[:, 0], gray[:, 1])
    torch.testing.assert_close(gray[:, 1], gray[:, 2])
    (sol,) = MultiCropAugment(n_global=1, **{**PLAIN, "solarize_p": 1.0})(imgs)
    x = to_float_tensor(imgs)
    torch.testing.assert_close(sol, torch.where(x < 0.5, x, 1.0 - x), atol=1e-5, rtol=0)


def test_blur_smooths_and_kernel_follows_image_size():
    assert blur_kernel_size(224) == 23 and blur_kernel_size(96) == 9
    assert blur_kernel_size(32) == 3 and blur_kernel_size(8) == 0
    torch.manual_seed(0)
    imgs = random_images(4)
    (blurred,) = MultiCropAugment(n_global=1, **{**PLAIN, "blur_p": 1.0,
                                                "blur_sigma": (1.5, 2.0)})(imgs)
    x = to_float_tensor(imgs)

    def tv(t):
        return (t[..., 1:] - t[..., :-1]).abs().mean()
    assert tv(blurred) < 0.6 * tv(x)
    # 8 px globals get no blur step at all (it would erase a digit).
    aug8 = MultiCropAugment(global_size=8)
    assert not any("Blur" in type(step).__name__ for view in aug8.global_views for step in view)
    aug32 = MultiCropAugment(global_size=32, n_local=1)
    probs = [[s.p for s in v if "Blur" in type(s).__name__] for v in aug32.global_views]
    assert probs == [[1.0], [0.1]]  # BYOL's asymmetric blur; solarise only on the 2nd global
    assert [any("Solarize" in type(s).__name__ for s in v) for v in aug32.global_views] == [False, True]


def test_color_jitter_changes_colours():
    torch.manual_seed(0)
    imgs = random_images(8)
    (view,) = MultiCropAugment(n_global=1, **{**PLAIN, "color_jitter": (0.4, 0.4, 0.2, 0.1),
                                             "color_jitter_p": 1.0})(imgs)
    x = to_float_tensor(imgs)
    assert ((view - x).abs().amax(dim=(1, 2, 3)) > 0.02).all()


def test_sobel_matches_direct_computation():
    rng = np.random.default_rng(0)
    img = rng.random((3, 7, 9)).astype(np.float32)
    out = Sobel()(torch.from_numpy(img)[None])[0].numpy()
    gray = img.mean(axis=0)
    # scipy's sobel correlates with [-1,0,1] x [1,2,1]; DeepCluster's kernels have the opposite
    # sign, and both pad with zeros here.
    gx = -ndimage.sobel(gray, axis=1, mode="constant", cval=0.0)
    gy = -ndimage.sobel(gray, axis=0, mode="constant", cval=0.0)
    np.testing.assert_allclose(out[0], gx, atol=1e-5)
    np.testing.assert_allclose(out[1], gy, atol=1e-5)
    # The module's fixed filters are not parameters and not saved.
    assert list(Sobel().parameters()) == [] and Sobel().state_dict() == {}


def test_eval_transform_resizes_normalises_and_is_deterministic():
    imgs = random_images(2, 16)
    t = EvalTransform(32, mean="cifar10")
    a, b = t(imgs), t(imgs)
    assert a.shape == (2, 3, 32, 32)
    torch.testing.assert_close(a, b)
    same = EvalTransform(16, mean="none")(imgs)
    torch.testing.assert_close(same, to_float_tensor(imgs))
    assert EvalTransform(16, sobel=True)(imgs).shape == (2, 2, 16, 16)
    torch.testing.assert_close(EvalTransform(16, mean="none")(to_float_tensor(imgs)), same)


def test_augmenters_add_nothing_to_a_models_state_dict():
    model = nn.Linear(2, 2)
    model.views = MultiCropAugment(n_local=2, solarize_p=1.0, sobel=True)
    model.eval_views = EvalTransform(32, sobel=True)
    assert set(model.state_dict()) == {"weight", "bias"}


def test_from_config_reads_yaml_style_dicts():
    cfg = {"n_global": 2, "global_size": 16, "global_scale": [0.3, 1.0], "n_local": 2,
           "local_size": 8, "blur_p": [1.0, 0.1], "mean": "cifar10", "color_jitter": None}
    aug = MultiCropAugment.from_config(cfg)
    views = aug(random_images(2))
    assert [v.shape[-1] for v in views] == [16, 16, 8, 8]
    assert not any("ColorJitter" in type(s).__name__ for v in aug.global_views for s in v)
    with pytest.raises(ValueError, match="unknown augmentation option.*n_globals"):
        MultiCropAugment.from_config({"n_globals": 2})
    with pytest.raises(ViewConfigError, match="global_scale"):
        MultiCropAugment(global_scale=(0.5, 0.2))
    with pytest.raises(ViewConfigError, match="blur_p"):
        MultiCropAugment(blur_p=(1.5,))
