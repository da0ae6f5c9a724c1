"""ImageStore: folders, labels, .npz, digits, working size, cache reuse/invalidation, atomicity."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import TINY_CLASSES, TINY_PER_CLASS, TINY_SIDE
from deepclust.data import store as store_mod
from deepclust.data.store import load_images
from deepclust.errors import DataError


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def _solid(side, value, h=None):
    return np.full((h or side, side, 3), value, np.uint8)


@pytest.fixture
def decode_counter(monkeypatch):
    calls = []
    real = store_mod.decode_image

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(store_mod, "decode_image", counting)
    return calls


# --------------------------------------------------------------------------- folders and labels


def test_tiny_folder_labels_from_class_subfolders(tiny_image_folder):
    store = load_images(tiny_image_folder, progress=False)
    n = len(TINY_CLASSES) * TINY_PER_CLASS
    assert store.images.shape == (n, TINY_SIDE, TINY_SIDE, 3) and store.images.dtype == np.uint8
    assert store.class_names == sorted(TINY_CLASSES)
    assert store.labels.dtype == np.int64
    assert np.bincount(store.labels).tolist() == [TINY_PER_CLASS] * len(TINY_CLASSES)
    for path, label, image in zip(store.paths, store.labels, store.images):
        assert os.path.basename(os.path.dirname(path)) == store.class_names[label]
        np.testing.assert_array_equal(image, np.asarray(Image.open(path).convert("RGB")))
    assert not store.images.flags.writeable  # a read-only memory map of the cache


def test_root_files_get_minus_one_and_nested_files_their_top_folder(tmp_path):
    root = tmp_path / "data"
    _png(root / "cats" / "a.png", _solid(8, 10))
    _png(root / "cats" / "indoor" / "b.png", _solid(8, 20))
    _png(root / "dogs" / "c.png", _solid(8, 30))
    _png(root / "loose.png", _solid(8, 40))
    _png(root / ".trash" / "d.png", _solid(8, 50))  # hidden folder: ignored
    store = load_images(root, progress=False)
    by_name = {os.path.basename(p): int(y) for p, y in zip(store.paths, store.labels)}
    assert store.class_names == ["cats", "dogs"]
    assert by_name == {"a.png": 0, "b.png": 0, "c.png": 1, "loose.png": -1}


def test_flat_folder_has_no_labels(tmp_path):
    for i in range(3):
        _png(tmp_path / "flat" / f"{i}.png", _solid(8, i * 50))
    store = load_images(tmp_path / "flat", progress=False)
    assert store.labels is None and store.class_names is None and len(store) == 3
    assert [int(im[0, 0, 0]) for im in store.images] == [0, 50, 100]


def test_split_selects_subfolder(tmp_path):
    _png(tmp_path / "ds" / "train" / "a" / "1.png", _solid(8, 1))
    _png(tmp_path / "ds" / "test" / "a" / "1.png", _solid(8, 2))
    _png(tmp_path / "ds" / "test" / "b" / "1.png", _solid(8, 3))
    store = load_images(tmp_path / "ds", split="test", progress=False)
    assert len(store) == 2 and store.class_names == ["a", "b"]
    with pytest.raises(DataError, match="no 'val' sub-folder"):
        load_images(tmp_path / "ds", split="val", progress=False)


# --------------------------------------------------------------------------- working size


def test_mixed_sizes_use_most_common_side(tmp_path):
    root = tmp_path / "mixed"
    for i in range(3):
        _png(root / f"s{i}.png", _solid(16, 100))
    _png(root / "big.png", _solid(40, 200))
    _png(root / "wide.png", _solid(50, 60, h=16))  # shorter side 16
    store = load_images(root, progress=False)
    assert store.images.shape == (5, 16, 16, 3)
    assert int(store.images[0, 8, 8, 0]) == 200  # big.png sorts first and was downscaled
    assert load_images(root, max_size=10, progress=False).size == 10
    assert load_images(root, size=12, progress=False).size == 12


def test_large_images_come_down_to_max_size(tmp_path):
    _png(tmp_path / "big" / "a.png", np.random.default_rng(0).integers(0, 255, (200, 300, 3), dtype=np.uint8))
    assert load_images(tmp_path / "big", progress=False).images.shape == (1, 96, 96, 3)


def test_invalid_size_arguments(tiny_image_folder):
    with pytest.raises(DataError, match="size must be a positive integer"):
        load_images(tiny_image_folder, size=0, progress=False)
    with pytest.raises(DataError, match="max_size"):
        load_images(tiny_image_folder, max_size=-3, progress=False)


# --------------------------------------------------------------------------- cache


def test_second_load_reuses_cache_without_decoding(tiny_image_folder, decode_counter):
    first = load_images(tiny_image_folder, progress=False)
    n_decoded = len(decode_counter)
    assert n_decoded == len(first)
    second = load_images(tiny_image_folder, progress=False)
    assert len(decode_counter) == n_decoded  # nothing decoded again
    assert second.source_id == first.source_id and second.directory == first.directory
    np.testing.assert_array_equal(second.images, first.images)
    assert second.paths == first.paths and second.class_names == first.class_names
    np.testing.assert_array_equal(second.labels, first.labels)
    # Another working size is another store.
    assert load_images(tiny_image_folder, size=8, progress=False).source_id != first.source_id


def test_changed_source_rebuilds(tiny_image_folder, decode_counter):
    first = load_images(tiny_image_folder, progress=False)
    target = tiny_image_folder / "squares" / "squares_0.png"
    _png(tiny_image_folder / "squares" / "extra.png", _solid(TINY_SIDE, 7))
    added = load_images(tiny_image_folder, progress=False)
    assert added.source_id != first.source_id and len(added) == len(first) + 1

    before = len(decode_counter)
    _png(target, _solid(TINY_SIDE, 99))
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse file systems
    modified = load_images(tiny_image_folder, progress=False)
    assert modified.source_id not in (first.source_id, added.source_id)
    assert len(decode_counter) > before
    idx = modified.paths.index(str(target))
    assert (modified.images[idx] == 99).all()


def test_killed_build_leaves_nothing_that_looks_valid(tiny_image_folder, monkeypatch):
    real = store_mod.decode_image
    calls = []

    def dies_midway(path, size):
        calls.append(path)
        if len(calls) == 5:
            raise KeyboardInterrupt  # stands in for Ctrl-C / a kill during decoding
        return real(path, size)

    monkeypatch.setattr(store_mod, "decode_image", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        load_images(tiny_image_folder, progress=False, workers=1)
    stores = list((tiny_image_folder.parent / "cache" / "stores").iterdir())
    assert stores == []
    monkeypatch.setattr(store_mod, "decode_image", real)
    assert len(load_images(tiny_image_folder, progress=False)) == len(TINY_CLASSES) * TINY_PER_CLASS


def test_incomplete_store_dir_and_dead_temp_dirs_are_not_used(tiny_image_folder, decode_counter):
    first = load_images(tiny_image_folder, progress=False)
    (first.directory / "index.json").unlink()  # as if a copy had been cut short
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket
    stale = first.directory.parent / f".tmp-abc~{socket.gethostname()}~{int(dead.stdout)}~dead"
    stale.mkdir()
    rebuilt = load_images(tiny_image_folder, progress=False)
    assert len(decode_counter) == 2 * len(first)  # decoded again rather than trusting the leftover
    np.testing.assert_array_equal(rebuilt.images, first.images)
    assert not stale.exists()


def test_threaded_and_serial_decoding_agree(tiny_image_folder, tmp_path):
    serial = load_images(tiny_image_folder, progress=False, workers=1, cache_dir=tmp_path / "c1")
    threaded = load_images(tiny_image_folder, progress=False, workers=3, cache_dir=tmp_path / "c2")
    np.testing.assert_array_equal(serial.images, threaded.images)
    assert serial.paths == threaded.paths
    assert (tmp_path / "c1" / "stores" / serial.source_id / "images.npy").is_file()


# --------------------------------------------------------------------------- arrays: npz, digits


def test_npz_variants(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 6, 6), dtype=np.uint8)
    np.savez(tmp_path / "gray.npz", images=gray)
    store = load_images(tmp_path / "gray.npz", progress=False)
    assert store.images.shape == (5, 6, 6, 3) and store.labels is None
    assert (store.images == gray[..., None]).all()
    assert store.paths[2] == f"{tmp_path / 'gray.npz'}#2"

    rgb = rng.integers(0, 256, (4, 6, 6, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", images=rgb, labels=np.array([0, 1, 1, 0]), class_names=np.array(["x", "y"]))
    store = load_images(tmp_path / "rgb.npz", progress=False)
    np.testing.assert_array_equal(store.images, rgb)
    assert store.labels.tolist() == [0, 1, 1, 0] and store.class_names == ["x", "y"]

    np.savez(tmp_path / "one.npz", images=gray[..., None])
    assert (load_images(tmp_path / "one.npz", progress=False).images == gray[..., None]).all()

    rgba = np.zeros((2, 4, 4, 4), np.uint8)
    rgba[..., 2] = 200
    rgba[0, ..., 3] = 255
    np.savez(tmp_path / "rgba.npz", images=rgba)
    store = load_images(tmp_path / "rgba.npz", progress=False)
    assert tuple(store.images[0, 0, 0]) == (0, 0, 200) and tuple(store.images[1, 0, 0]) == (255, 255, 255)

    big = rng.integers(0, 256, (2, 120, 120, 3), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", images=big)
    assert load_images(tmp_path / "big.npz", progress=False).images.shape == (2, 96, 96, 3)


@pytest.mark.parametrize("arrays, message", [
    ({"pictures": np.zeros((2, 4, 4), np.uint8)}, "no 'images' array"),
    ({"images": np.zeros((2, 4, 4), np.float32)}, "must be uint8"),
    ({"images": np.zeros((2, 4, 4, 2), np.uint8)}, r"shape \(N,H,W\) or \(N,H,W,C\)"),
    ({"images": np.zeros((4, 4), np.uint8)}, r"shape \(N,H,W\)"),
    ({"images": np.zeros((0, 4, 4), np.uint8)}, "is empty"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.zeros(3, int)}, "'labels' must be integers of shape"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.array([0, 2]), "class_names": np.array(["a", "b"])},
     "only 2 class_names"),
    ({"images": np.zeros((2, 4, 4), np.uint8), "labels": np.array([None, 1], dtype=object)}, "cannot read"),
])
def test_npz_errors(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_images(tmp_path / "bad.npz", progress=False)


def test_npz_rejects_split_and_other_files(tmp_path):
    np.savez(tmp_path / "ok.npz", images=np.zeros((1, 4, 4), np.uint8))
    with pytest.raises(DataError, match="split"):
        load_images(tmp_path / "ok.npz", split="test", progress=False)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="not a .npz"):
        load_images(tmp_path / "x.csv", progress=False)


def test_digits():
    from sklearn.datasets import load_digits

    store = load_images("digits", progress=False)
    ref = load_digits()
    assert store.images.shape == (1797, 8, 8, 3) and store.size == 8
    assert store.labels.tolist() == ref.target.tolist() and store.class_names == [str(i) for i in range(10)]
    assert store.images.max() == 255 and store.images.min() == 0
    assert (store.images[..., 0] == store.images[..., 2]).all()
    np.testing.assert_array_equal(store.images[5, ..., 1], np.rint(ref.images[5] * 255 / 16).astype(np.uint8))
