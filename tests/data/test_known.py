"""Known data sets: parsers on tiny fake archives in the official formats; never the network."""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import os
import pickle
import tarfile
from urllib.error import URLError

import numpy as np
import pytest

from deepclust.data import known
from deepclust.data.known import KNOWN_DATASETS, ArrayOnlyUnpickler, RemoteFile, fetch, parse_known_spec
from deepclust.data.store import load_images
from deepclust.errors import DataError


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download fails the way an offline machine does."""
    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise URLError("network is unreachable")

    monkeypatch.setattr(known, "urlopen", offline)
    return attempts


def _downloads(tmp_path):
    d = tmp_path / "cache" / "downloads"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _register_fake(monkeypatch, name, role, path):
    """Point the registry's checksum at the fake file (the real md5 is of the official file)."""
    old = KNOWN_DATASETS[name].files[role]
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setitem(KNOWN_DATASETS[name].files, role, RemoteFile(old.filename, old.urls, md5))


def _tar_gz(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _cifar_images(n, seed):
    """(N, 32, 32, 3) with a different constant per channel plus a marker pixel at row 1, col 5."""
    rng = np.random.default_rng(seed)
    imgs = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    imgs[:, 1, 5] = (255, 0, 128)
    return imgs


def _cifar_batch(imgs, labels, key="labels"):
    # Official layout: rows of 3072 = 1024 R, 1024 G, 1024 B, each plane row-major; protocol 2.
    data = imgs.transpose(0, 3, 1, 2).reshape(len(imgs), -1)
    return pickle.dumps({"batch_label": "fake", key: list(labels), "data": data,
                         "filenames": [f"{i}.png" for i in range(len(imgs))]}, protocol=2)


@pytest.fixture
def fake_cifar10(tmp_path, monkeypatch):
    members, train_imgs, train_labels = {}, [], []
    for b in range(1, 6):
        imgs, labels = _cifar_images(2, b), [b % 10, (b + 1) % 10]
        members[f"cifar-10-batches-py/data_batch_{b}"] = _cifar_batch(imgs, labels)
        train_imgs.append(imgs)
        train_labels += labels
    test_imgs = _cifar_images(3, 99)
    members["cifar-10-batches-py/test_batch"] = _cifar_batch(test_imgs, [7, 8, 9])
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2)
    archive = _downloads(tmp_path) / "cifar-10-python.tar.gz"
    _tar_gz(archive, members)
    _register_fake(monkeypatch, "cifar10", "archive", archive)
    return np.concatenate(train_imgs), train_labels, test_imgs, names


def test_cifar10_from_local_archive_without_network(fake_cifar10, no_network):
    train, train_labels, test, names = fake_cifar10
    store = load_images("cifar10:test", progress=False)
    np.testing.assert_array_equal(store.images, test)
    assert tuple(store.images[0, 1, 5]) == (255, 0, 128)
    assert store.labels.tolist() == [7, 8, 9] and store.class_names == names
    assert store.paths[0] == "cifar10:test#0"
    default = load_images("cifar10", progress=False)  # default split: train
    np.testing.assert_array_equal(default.images, train)
    assert default.labels.tolist() == train_labels
    both = load_images("cifar10", split="all", progress=False)
    assert len(both) == len(train) + len(test)
    assert no_network == []  # a present archive needs no download


def test_cifar_store_is_reused_without_parsing_again(fake_cifar10, monkeypatch):
    calls = []
    real = known.read_cifar_archive
    monkeypatch.setattr(known, "read_cifar_archive", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = load_images("cifar10:test", progress=False)
    second = load_images("cifar10:test", progress=False)
    assert len(calls) == 1 and second.source_id == first.source_id


def test_cifar100_fine_labels(tmp_path, monkeypatch):
    train, test = _cifar_images(4, 1), _cifar_images(2, 2)
    members = {
        "cifar-100-python/train": _cifar_batch(train, [3, 50, 99, 0], key="fine_labels"),
        "cifar-100-python/test": _cifar_batch(test, [1, 2], key="fine_labels"),
        "cifar-100-python/meta": pickle.dumps({"fine_label_names": [f"c{i}" for i in range(100)],
                                               "coarse_label_names": [f"s{i}" for i in range(20)]}, protocol=2),
    }
    archive = _downloads(tmp_path) / "cifar-100-python.tar.gz"
    _tar_gz(archive, members)
    _register_fake(monkeypatch, "cifar100", "archive", archive)
    store = load_images("cifar100:train", progress=False)
    np.testing.assert_array_equal(store.images, train)
    assert store.labels.tolist() == [3, 50, 99, 0] and store.class_names[99] == "c99"


def test_mnist_idx(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    labels = np.array([4, 0, 9], np.uint8)
    d = _downloads(tmp_path)
    for role, fname, payload in [
        ("test_images", "t10k-images-idx3-ubyte.gz", np.array([2051, 3, 28, 28], ">i4").tobytes() + imgs.tobytes()),
        ("test_labels", "t10k-labels-idx1-ubyte.gz", np.array([2049, 3], ">i4").tobytes() + labels.tobytes()),
    ]:
        with gzip.open(d / fname, "wb") as f:
            f.write(payload)
        _register_fake(monkeypatch, "mnist", role, d / fname)
    store = load_images("mnist:test", progress=False)
    assert store.images.shape == (3, 28, 28, 3)
    np.testing.assert_array_equal(store.images[..., 1], imgs)
    assert store.labels.tolist() == [4, 0, 9]
    # A wrong magic number is a clear error, not garbage images.
    with gzip.open(d / "bad.gz", "wb") as f:
        f.write(np.array([1234, 3, 28, 28], ">i4").tobytes() + imgs.tobytes())
    with pytest.raises(DataError, match="not an MNIST idx3"):
        known.read_mnist_idx(d / "bad.gz", d / "t10k-labels-idx1-ubyte.gz")


def test_stl10_binary_column_major(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    train[0, 1, 5] = (255, 0, 128)  # row 1, column 5
    unlabeled = rng.integers(0, 256, (3, 96, 96, 3), dtype=np.uint8)

    def column_major(imgs):  # (N, H, W, C) -> official (N, C, W, H) bytes
        return np.ascontiguousarray(imgs.transpose(0, 3, 2, 1)).tobytes()

    archive = _downloads(tmp_path) / "stl10_binary.tar.gz"
    _tar_gz(archive, {
        "stl10_binary/train_X.bin": column_major(train),
        "stl10_binary/train_y.bin": bytes([1, 10]),
        "stl10_binary/test_X.bin": column_major(train[:1]),
        "stl10_binary/test_y.bin": bytes([3]),
        "stl10_binary/unlabeled_X.bin": column_major(unlabeled),
        "stl10_binary/class_names.txt": b"\n".join(n.encode() for n in "abcdefghij") + b"\n",
        "stl10_binary/../../evil.txt": b"must never be written outside the cache",
    })
    _register_fake(monkeypatch, "stl10", "archive", archive)
    store = load_images("stl10", progress=False)
    np.testing.assert_array_equal(store.images, train)
    assert tuple(store.images[0, 1, 5]) == (255, 0, 128)
    assert store.labels.tolist() == [0, 9] and store.class_names[9] == "j"
    mixed = load_images("stl10:train+unlabeled", progress=False)
    assert len(mixed) == 5 and mixed.labels.tolist() == [0, 9, -1, -1, -1]
    np.testing.assert_array_equal(mixed.images[2:], unlabeled)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "cache" / "evil.txt").exists()


# --------------------------------------------------------------------------- downloading


def test_offline_error_names_url_and_where_to_put_the_file(tmp_path, no_network):
    with pytest.raises(DataError) as info:
        load_images("cifar10:test", progress=False)
    msg = str(info.value)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg
    assert "network is unreachable" in msg
    assert f"put cifar-10-python.tar.gz (md5 c58f30108f718f92721af3b95e74349a) in {_downloads(tmp_path)}/" in msg
    assert no_network == ["https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"]
    assert not list(_downloads(tmp_path).iterdir())  # no partial file left


def test_mnist_offline_tries_every_mirror(no_network):
    with pytest.raises(DataError, match="yann.lecun.com"):
        load_images("mnist:test", progress=False)
    assert len(no_network) == 2


class _FakeResponse(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_download_checks_md5(tmp_path, monkeypatch):
    payload = b"official bytes" * 100
    monkeypatch.setattr(known, "urlopen", lambda url, timeout=None: _FakeResponse(payload))
    good = RemoteFile("thing.bin", ("https://example.org/thing.bin",), hashlib.md5(payload).hexdigest())
    path = fetch(good, progress=False)
    assert path == _downloads(tmp_path) / "thing.bin" and path.read_bytes() == payload

    bad = RemoteFile("other.bin", ("https://example.org/other.bin",), "0" * 32)
    with pytest.raises(DataError, match="checksum mismatch"):
        fetch(bad, progress=False)
    assert sorted(os.listdir(_downloads(tmp_path))) == ["thing.bin"]  # partial download removed


def test_damaged_local_archive_is_reported(tmp_path):
    (_downloads(tmp_path) / "cifar-10-python.tar.gz").write_bytes(b"half a download")
    with pytest.raises(DataError, match="md5 .* expected c58f30108f718f92721af3b95e74349a"):
        load_images("cifar10", progress=False)


def test_restricted_unpickler_refuses_code():
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(Evil(), protocol=2))).load()
    ok = ArrayOnlyUnpickler(io.BytesIO(pickle.dumps({"data": np.arange(6, dtype=np.uint8)}, protocol=2))).load()
    assert ok["data"].tolist() == [0, 1, 2, 3, 4, 5]
    p5 = ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(np.arange(4, dtype=np.uint8).reshape(2, 2), protocol=5))).load()
    assert p5.tolist() == [[0, 1], [2, 3]]

    class OtherCodec:
        def __reduce__(self):
            return (codecs.encode, ("x", "zlib_codec"))

    with pytest.raises(pickle.UnpicklingError, match="only latin1"):
        ArrayOnlyUnpickler(io.BytesIO(pickle.dumps(OtherCodec(), protocol=2))).load()


def test_spec_parsing():
    ds, split = parse_known_spec("CIFAR10:test")
    assert ds.name == "cifar10" and split == "test"
    assert parse_known_spec("stl10", "unlabeled")[1] == "unlabeled"
    assert parse_known_spec("imagenet") is None
    with pytest.raises(DataError, match="no split 'valid'"):
        parse_known_spec("mnist:valid")
    with pytest.raises(DataError, match="use one"):
        parse_known_spec("mnist:test", "train")
