"""Faults that need a patch (root ignores chmod 000, disks are not full on demand) or that
are cheapest in-process: content changes the cache must notice, permission errors, file
modes, full caches and output folders, the estimator's scikit-learn contract, and the
trust flag in Python."""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone

from deepclust.data import store as store_mod
from deepclust.data.sources import scan_folder
from deepclust.data.store import load_images
from deepclust.errors import DeepclustError
from deepclust.train.loop import train
from toy_method import ToyMethod, toy_cfg, toy_store


def _folder(root, n=6, side=8, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        # uncompressed: every file has the same size, so one can replace another byte-size-exactly
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(root / f"i{i}.png",
                                                                                    compress_level=0)
    return root


def test_a_same_size_same_mtime_edit_and_damaged_store_bytes_are_noticed(tmp_path, caplog):
    src = _folder(tmp_path / "src")
    first = load_images(src, progress=False)
    target, other = src / "i0.png", src / "i1.png"
    st = target.stat()
    assert other.stat().st_size == st.st_size
    target.write_bytes(other.read_bytes())
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -r`: the old mtime again
    assert (target.stat().st_size, target.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = load_images(src, progress=False)
    assert second.source_id != first.source_id  # the ctime moved: a new store was built
    np.testing.assert_array_equal(second.images[0], first.images[1])
    # flip bytes inside the cached store: noticed by the checksum, rebuilt, right images again
    path = second.directory / "images.npy"
    good = np.array(second.images)
    raw = bytearray(path.read_bytes())
    raw[-10:] = bytes(255 - b for b in raw[-10:])
    path.write_bytes(bytes(raw))
    with caplog.at_level(logging.WARNING, logger="deepclust.data.store"):
        third = load_images(src, progress=False)
    assert "damaged" in caplog.text
    np.testing.assert_array_equal(np.array(third.images), good)


def test_permission_errors_are_unreadable_files_and_listed_folders(tmp_path, monkeypatch):
    src = _folder(tmp_path / "src")
    _folder(src / "locked", n=2)
    real_open, real_scandir = Image.open, os.scandir

    def no_read(path, *a, **k):
        if str(path).endswith("i1.png"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    def no_list(path="."):
        if str(path).endswith("locked"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(Image, "open", no_read)
    monkeypatch.setattr(os, "scandir", no_list)
    assert any("unreadable folder" in r for _, r in scan_folder(src).skipped)
    loaded = load_images(src, progress=False)
    reasons = dict((os.path.basename(p), r) for p, r in loaded.skipped)
    assert reasons["i1.png"].startswith("unreadable") and reasons["locked"].startswith("unreadable folder")


def test_weights_store_and_cache_files_get_the_umask_mode_not_0600(tmp_path):
    from deepclust.features import extract_features

    umask = os.umask(0o022)
    try:
        torch.manual_seed(0)
        run = train(toy_cfg(epochs=1), toy_store(), tmp_path / "run", method=ToyMethod(), progress=False)
        loaded = load_images(_folder(tmp_path / "src"), progress=False)
        extract_features(loaded, "raw", progress=False)
    finally:
        os.umask(umask)
    files = [(run / "model.safetensors").resolve(), (run / "state.json").resolve(),
             loaded.directory / "images.npy", loaded.directory / "index.json",
             *(tmp_path / "cache" / "features").glob("*.npy")]
    assert len(files) >= 5
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_a_full_feature_cache_warns_and_goes_on(tmp_path, monkeypatch, caplog):
    from deepclust.features import cache, extract_features

    loaded = load_images(_folder(tmp_path / "src"), progress=False)

    def full(path, array):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache, "save_atomic", full)
    with caplog.at_level(logging.WARNING):
        x = extract_features(loaded, "raw", progress=False)
    assert x.shape == (6, 8 * 8 * 3) and "not cached" in caplog.text


def test_a_read_only_output_folder_fails_before_decoding_and_a_full_disk_on_writing_is_clear(tmp_path, monkeypatch):
    from deepclust.core import outdir
    from deepclust.pipeline import cluster_source

    src = _folder(tmp_path / "src")
    decoded = []
    monkeypatch.setattr(store_mod, "_build", lambda *a, **k: decoded.append(1))

    def read_only(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as m:
        m.setattr(outdir.tempfile, "mkstemp", read_only)
        with pytest.raises(DeepclustError, match="is not writable"):
            cluster_source(str(src), k=2, out_dir=tmp_path / "ro", progress=False)
    assert decoded == []
    monkeypatch.undo()
    from deepclust.report import html, plots

    monkeypatch.setattr(plots, "resolve_embedding_method", lambda method: "pca")  # no umap JIT here

    def disk_full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(html, "atomic_write_bytes", disk_full)
    with pytest.raises(DeepclustError, match="the disk is full"):
        cluster_source(str(src), k=2, out_dir=tmp_path / "full", progress=False)


def test_the_estimator_clones_and_refuses_another_image_size(tmp_path):
    from deepclust.estimator import DeepClusterer

    rng = np.random.default_rng(0)
    model = DeepClusterer(model="raw", k=2, verbose=False, device="cpu").fit(
        rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8))
    twin = clone(model)
    assert twin.get_params() == model.get_params() and not hasattr(twin, "labels_")
    with pytest.raises(DeepclustError):
        model.predict(rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    with pytest.raises(DeepclustError, match="unknown device"):
        DeepClusterer(model="raw", k=2, device="gpu9").fit(np.zeros((4, 8, 8), np.uint8))


def test_custom_methods_need_trust_custom_code_in_python(tmp_path):
    from deepclust.features import load_model

    torch.manual_seed(0)
    cfg = toy_cfg(epochs=1, method="toy_method:make_toy")
    with pytest.raises(DeepclustError, match="trust_custom_code=True"):
        train(cfg, toy_store(), tmp_path / "refused", progress=False)
    sys.modules.pop("toy_method_shadow", None)
    run = train(cfg, toy_store(), tmp_path / "run", progress=False, trust_custom_code=True)
    with pytest.raises(DeepclustError, match="custom code"):
        load_model(run)
    assert load_model(run, trust_custom_code=True).kind == "run"


def test_a_diverged_first_epoch_does_not_claim_a_kept_checkpoint(tmp_path):
    from deepclust.train.step import NonFiniteLossError

    torch.manual_seed(0)
    method = ToyMethod()
    with torch.no_grad():
        method.backbone.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="no checkpoint") as info:
        train(toy_cfg(epochs=1), toy_store(), tmp_path / "run", method=method, progress=False)
    assert "is kept" not in str(info.value)


def test_cjk_and_undecodable_labels_draw_without_missing_glyphs():
    import warnings

    from deepclust.report import plots

    label = plots.plot_text("猫")
    assert label == "猫" if plots.cjk_fonts() else label == "U+732B"
    assert plots.plot_text(os.fsdecode(b"bad\xffname")) == "bad\ufffdname"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)"
        png = plots.plot_confusion(np.eye(2, dtype=int), ["猫", os.fsdecode(b"bad\xff")], ["0", "1"])
    assert png.startswith(b"\x89PNG")


def test_the_estimator_without_config_trains_small_images_with_the_digits_recipe():
    from deepclust.estimator import DeepClusterer
    from deepclust.train.config import TrainConfig

    recipe = TrainConfig.load("digits_dino")
    small = DeepClusterer(method="dino", k=10)._build_config(8, 1797)
    assert (small.backbone, small.backbone_kwargs, small.epochs, small.method_kwargs) == (
        recipe.backbone, recipe.backbone_kwargs, recipe.epochs, recipe.method_kwargs)
    large = DeepClusterer(method="dino", k=10)._build_config(64, 1797)
    assert large.backbone == TrainConfig().backbone and large.epochs == TrainConfig().epochs
