"""Known data sets by name: CIFAR-10/100, STL-10 and MNIST from their official archives.

``cifar10``, ``cifar10:test``, ``cifar100:all``, ``stl10:unlabeled``, ``mnist:train`` ...

Each archive is downloaded once (with a progress bar) into ``<cache>/downloads/``, its md5
is checked against the official value, and the official format is parsed directly:

* CIFAR: the ``python`` pickles inside the ``.tar.gz``, read straight from the tar (nothing is
  extracted, so no path in the archive can escape the cache directory). Pickle is needed
  because that is the official format; it is loaded with :class:`ArrayOnlyUnpickler`, which
  only resolves numpy's array/dtype reconstructors. Any other global (``os.system``,
  ``builtins.eval``, a class) is refused, so a tampered file cannot run code; the md5 check
  comes first anyway.
* MNIST: the four ``idx`` files (``.gz``), parsed with ``numpy.frombuffer``.
* STL-10: the binary ``.bin`` files; the needed members are copied once to
  ``<cache>/downloads/stl10_binary/`` and memory-mapped (``unlabeled`` is 2.7 GB).

Without network the error says which URL failed and where to put a copy: a file with the
official name placed in ``<cache>/downloads/`` is used as is (after its checksum is checked).

Splits: ``train`` (default), ``test``, ``all`` (train + test, as deep-clustering papers use
for CIFAR), and for STL-10 also ``unlabeled`` and ``train+unlabeled``.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError
from urllib.request import urlopen

import numpy as np
from tqdm.auto import tqdm

from deepclust.errors import DataError

__all__ = [
    "ArrayData",
    "KnownDataset",
    "RemoteFile",
    "KNOWN_DATASETS",
    "ArrayOnlyUnpickler",
    "cache_root",
    "downloads_dir",
    "parse_known_spec",
    "fetch",
    "load_known",
    "read_cifar_archive",
    "read_mnist_idx",
    "read_stl10_archive",
]

_CHUNK = 1 << 20


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """The cache directory: ``cache_dir``, else ``$DEEPCLUST_CACHE``, else ``~/.cache/deepclust``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("DEEPCLUST_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepclust"


def downloads_dir(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir) / "downloads"


@dataclass
class ArrayData:
    """Images held as an array: ``(N, H, W)`` or ``(N, H, W, C)`` uint8, ``C`` in 1, 3, 4."""

    images: np.ndarray
    labels: np.ndarray | None  # (N,) int64, -1 where unknown
    class_names: list[str] | None


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    urls: tuple[str, ...]  # tried in order (mirrors)
    md5: str | None  # None only for files made by tests


@dataclass
class KnownDataset:
    name: str
    files: dict[str, RemoteFile]  # role -> file
    splits: tuple[str, ...]
    reader: Callable[[KnownDataset, str, dict[str, Path], Path, bool], ArrayData]
    default_split: str = "train"


# --------------------------------------------------------------------------- downloading


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _offline_hint(remote: RemoteFile, target_dir: Path) -> str:
    md5 = f" (md5 {remote.md5})" if remote.md5 else ""
    return (
        f"To work offline, put {remote.filename}{md5} in {target_dir}/ and run again, "
        "or pass a folder of images instead."
    )


def fetch(remote: RemoteFile, cache_dir: str | Path | None = None, *, progress: bool = True) -> Path:
    """Return the local path of ``remote``, downloading and checking it if needed.

    A copy already in ``<cache>/downloads/`` is used without network. A wrong checksum of a
    local copy is an error (the file is left alone: it is the user's); a wrong checksum of a
    fresh download deletes the partial file.
    """
    target_dir = downloads_dir(cache_dir)
    target = target_dir / remote.filename
    if target.is_file():
        if remote.md5 and _md5(target) != remote.md5:
            raise DataError(
                f"{target} exists but its md5 is {_md5(target)}, expected {remote.md5}: the file is damaged or "
                f"not the official {remote.filename}. Delete it to download again. " + _offline_hint(remote, target_dir)
            )
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in remote.urls:
        part = target_dir / f".{remote.filename}.{uuid.uuid4().hex[:8]}.part"
        try:
            _download(url, part, label=remote.filename, progress=progress)
        except (URLError, OSError, ValueError) as e:
            part.unlink(missing_ok=True)
            failures.append(f"{url} ({getattr(e, 'reason', e)})")
            continue
        if remote.md5 and _md5(part) != remote.md5:
            part.unlink(missing_ok=True)
            failures.append(f"{url} (checksum mismatch)")
            continue
        os.replace(part, target)
        return target
    raise DataError(
        f"could not download {remote.filename}: " + "; ".join(failures) + ". " + _offline_hint(remote, target_dir)
    )


def _download(url: str, dest: Path, *, label: str, progress: bool) -> None:
    with urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        total = int(response.headers.get("Content-Length") or 0) or None
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {label}",
                  disable=not progress) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))


# --------------------------------------------------------------------------- CIFAR


def _numpy_reconstruct():
    # The function numpy pickles arrays with (numpy.core / numpy._core depending on version).
    return np.ndarray.__reduce__(np.zeros(1))[0]


def _numpy_frombuffer():
    # Protocol-5 pickles (CIFAR batches re-saved by Python 3) use numpy's _frombuffer.
    return np.zeros(1).__reduce_ex__(5)[0]


def _latin1_encode(text: str, encoding: str) -> bytes:
    """Python 3 writes ``bytes`` into protocol-2 pickles as ``_codecs.encode(text, "latin1")``."""
    if encoding.replace("-", "").lower() != "latin1":
        raise pickle.UnpicklingError(f"refusing codec {encoding!r}: only latin1 byte strings are allowed")
    return text.encode("latin1")


class ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickler for the official CIFAR batches: only numpy array/dtype reconstruction is allowed.

    Plain containers (dict, list, str, bytes, int) need no globals; the batches contain
    nothing else. Allowed: numpy's array reconstructors and ``dtype`` (they only allocate and
    fill memory from the pickled bytes) and ``_codecs.encode`` restricted to latin1 (how
    Python 3 stores ``bytes`` at protocol 2). Every other global is refused with
    ``UnpicklingError``, so loading cannot import modules or call arbitrary functions.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
        ("numpy.core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("numpy._core.numeric", "_frombuffer"): _numpy_frombuffer,
        ("_codecs", "encode"): lambda: _latin1_encode,
        ("numpy", "ndarray"): lambda: np.ndarray,
        ("numpy", "dtype"): lambda: np.dtype,
    }

    def find_class(self, module: str, name: str):
        resolver = self._ALLOWED.get((module, name))
        if resolver is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed here")
        return resolver()


def _load_batch(data: bytes, what: str) -> dict:
    try:
        obj = ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:
        raise DataError(f"cannot read {what}: {e}") from None
    if not isinstance(obj, dict):
        raise DataError(f"cannot read {what}: expected a dict, got {type(obj).__name__}")
    return obj


def _cifar_images(batch: dict, what: str) -> np.ndarray:
    data = np.asarray(batch.get("data"))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataError(f"cannot read {what}: 'data' is not a (N, 3072) uint8 array")
    # Rows are channel-major (1024 R, 1024 G, 1024 B), each plane row-major.
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def read_cifar_archive(archive: Path, *, fine: bool | None, split: str) -> ArrayData:
    """Parse ``cifar-10-python.tar.gz`` (``fine=None``) or ``cifar-100-python.tar.gz``.

    ``split`` is ``train``, ``test`` or ``all``; CIFAR-100 uses the fine (100-class) labels.
    """
    if fine is None:
        wanted = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
        meta_name, names_key, labels_key = "batches.meta", "label_names", "labels"
    else:
        wanted = {"train": ["train"], "test": ["test"]}
        meta_name, names_key, labels_key = "meta", "fine_label_names", "fine_labels"
    parts = wanted["train"] + wanted["test"] if split == "all" else wanted[split]
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tf:
                base = member.name.rsplit("/", 1)[-1]
                fh = tf.extractfile(member) if member.isfile() and (base in parts or base == meta_name) else None
                if fh is not None:
                    blobs[base] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {archive}: {e}. Delete it to download again.") from None
    missing = [p for p in parts + [meta_name] if p not in blobs]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: not an official CIFAR python archive")
    meta = _load_batch(blobs[meta_name], f"{archive}:{meta_name}")
    images, labels = [], []
    for p in parts:
        batch = _load_batch(blobs[p], f"{archive}:{p}")
        images.append(_cifar_images(batch, f"{archive}:{p}"))
        labels.append(np.asarray(batch.get(labels_key), dtype=np.int64))
    class_names = [str(n) for n in meta.get(names_key, [])]
    return ArrayData(np.concatenate(images), np.concatenate(labels), class_names or None)


# --------------------------------------------------------------------------- MNIST


def read_mnist_idx(images_gz: Path, labels_gz: Path) -> ArrayData:
    """Parse the gzipped ``idx3`` (images, magic 2051) and ``idx1`` (labels, magic 2049) files."""
    try:
        with gzip.open(images_gz, "rb") as f:
            raw = f.read()
        with gzip.open(labels_gz, "rb") as f:
            raw_labels = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"cannot read MNIST files {images_gz}, {labels_gz}: {e}") from None
    magic, n, rows, cols = np.frombuffer(raw[:16], dtype=">i4") if len(raw) >= 16 else (0, 0, 0, 0)
    if magic != 2051 or len(raw) != 16 + n * rows * cols:
        raise DataError(f"{images_gz} is not an MNIST idx3 image file")
    lmagic, ln = np.frombuffer(raw_labels[:8], dtype=">i4") if len(raw_labels) >= 8 else (0, 0)
    if lmagic != 2049 or ln != n or len(raw_labels) != 8 + n:
        raise DataError(f"{labels_gz} is not an MNIST idx1 label file for {images_gz}")
    images = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)
    labels = np.frombuffer(raw_labels, dtype=np.uint8, offset=8).astype(np.int64)
    return ArrayData(images, labels, [str(i) for i in range(10)])


def _read_mnist(ds: KnownDataset, split: str, files: dict[str, Path], cache: Path, progress: bool) -> ArrayData:
    parts = ["train", "test"] if split == "all" else [split]
    datas = [read_mnist_idx(files[f"{p}_images"], files[f"{p}_labels"]) for p in parts]
    return ArrayData(np.concatenate([d.images for d in datas]), np.concatenate([d.labels for d in datas]),
                     datas[0].class_names)


# --------------------------------------------------------------------------- STL-10

_STL_SIDE = 96
_STL_MEMBERS = {"train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt"}


def _extract_stl10(archive: Path, out_dir: Path, progress: bool) -> None:
    """Copy the known STL-10 members out of the tar (by fixed name, never by archive path)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tf:
            for member in tqdm(tf, desc="extract stl10", unit=" files", disable=not progress):
                base = member.name.rsplit("/", 1)[-1]
                if not member.isfile() or base not in _STL_MEMBERS or (out_dir / base).exists():
                    continue
                tmp = out_dir / f".{base}.{uuid.uuid4().hex[:8]}.part"
                member_file = tf.extractfile(member)
                if member_file is None:
                    continue
                with member_file as src, open(tmp, "wb") as dst:
                    for block in iter(lambda: src.read(_CHUNK), b""):
                        dst.write(block)
                os.replace(tmp, out_dir / base)
    except (tarfile.TarError, OSError, EOFError) as e:
        raise DataError(f"cannot read {archive}: {e}. Delete it to download again.") from None


def read_stl10_archive(archive: Path, extract_dir: Path, *, split: str, progress: bool = True) -> ArrayData:
    """Parse STL-10's binary release. Images are stored column-major ``(3, 96, 96)`` per image."""
    parts = {"train+unlabeled": ["train", "unlabeled"], "all": ["train", "test"]}.get(split, [split])
    needed = {f"{p}_X.bin" for p in parts} | {f"{p}_y.bin" for p in parts if p != "unlabeled"} | {"class_names.txt"}
    if not all((extract_dir / n).is_file() for n in needed):
        _extract_stl10(archive, extract_dir, progress)
    missing = sorted(n for n in needed if not (extract_dir / n).is_file())
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: not the official stl10_binary.tar.gz")
    per_image = 3 * _STL_SIDE * _STL_SIDE
    images, labels = [], []
    for p in parts:
        x_path = extract_dir / f"{p}_X.bin"
        if x_path.stat().st_size % per_image:
            raise DataError(f"{x_path} has a size that is not a multiple of one 3x96x96 image")
        raw = np.memmap(x_path, dtype=np.uint8, mode="r").reshape(-1, 3, _STL_SIDE, _STL_SIDE)
        images.append(raw.transpose(0, 3, 2, 1))  # (N, C, x, y) -> (N, y, x, C)
        if p == "unlabeled":
            labels.append(np.full(raw.shape[0], -1, dtype=np.int64))
        else:
            y = np.fromfile(extract_dir / f"{p}_y.bin", dtype=np.uint8).astype(np.int64) - 1  # 1..10 -> 0..9
            if len(y) != raw.shape[0]:
                raise DataError(f"{p}_y.bin has {len(y)} labels for {raw.shape[0]} images")
            labels.append(y)
    names = (extract_dir / "class_names.txt").read_text().split()
    # Concatenating memmaps would load 2.7 GB of unlabeled images; keep a single split lazy.
    stacked = images[0] if len(images) == 1 else np.concatenate(images)
    return ArrayData(stacked, np.concatenate(labels), names or None)


def _read_stl10(ds: KnownDataset, split: str, files: dict[str, Path], cache: Path, progress: bool) -> ArrayData:
    return read_stl10_archive(files["archive"], downloads_dir(cache) / "stl10_binary", split=split, progress=progress)


def _read_cifar10(ds, split, files, cache, progress) -> ArrayData:
    return read_cifar_archive(files["archive"], fine=None, split=split)


def _read_cifar100(ds, split, files, cache, progress) -> ArrayData:
    return read_cifar_archive(files["archive"], fine=True, split=split)


# --------------------------------------------------------------------------- registry

_MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")


def _mnist_file(name: str, md5: str) -> RemoteFile:
    return RemoteFile(name, tuple(m + name for m in _MNIST_MIRRORS), md5)


KNOWN_DATASETS: dict[str, KnownDataset] = {
    "cifar10": KnownDataset(
        "cifar10",
        {"archive": RemoteFile("cifar-10-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
                               "c58f30108f718f92721af3b95e74349a")},
        ("train", "test", "all"), _read_cifar10),
    "cifar100": KnownDataset(
        "cifar100",
        {"archive": RemoteFile("cifar-100-python.tar.gz", ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",),
                               "eb9058c3a382ffc7106e4002c42a8d85")},
        ("train", "test", "all"), _read_cifar100),
    "stl10": KnownDataset(
        "stl10",
        {"archive": RemoteFile("stl10_binary.tar.gz", ("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",),
                               "91f7769df0f17e558f3565bffb0c7dfb")},
        ("train", "test", "all", "unlabeled", "train+unlabeled"), _read_stl10),
    "mnist": KnownDataset(
        "mnist",
        {"train_images": _mnist_file("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
         "train_labels": _mnist_file("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
         "test_images": _mnist_file("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
         "test_labels": _mnist_file("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")},
        ("train", "test", "all"), _read_mnist),
}


def parse_known_spec(spec: str, split: str | None = None) -> tuple[KnownDataset, str] | None:
    """``"cifar10:test"`` -> (dataset, "test"); ``None`` if ``spec`` names no known data set."""
    name, _, suffix = spec.strip().lower().partition(":")
    ds = KNOWN_DATASETS.get(name.replace("-", "").replace("_", ""))
    if ds is None:
        return None
    if suffix and split and suffix != split:
        raise DataError(f"'{spec}' names split '{suffix}' but split='{split}' was also given; use one")
    chosen = suffix or split or ds.default_split
    if chosen not in ds.splits:
        raise DataError(f"{ds.name} has no split '{chosen}'; choose one of {', '.join(ds.splits)}")
    return ds, chosen


def _needed_roles(ds: KnownDataset, split: str) -> list[str]:
    if ds.name != "mnist":
        return list(ds.files)
    parts = ["train", "test"] if split == "all" else [split]
    return [f"{p}_{kind}" for p in parts for kind in ("images", "labels")]


def known_fingerprint(ds: KnownDataset, split: str) -> str:
    """Identity of (data set, split, official files) for the store cache key."""
    files = ",".join(f"{ds.files[r].filename}:{ds.files[r].md5}" for r in _needed_roles(ds, split))
    return f"known:{ds.name}:{split}:{files}"


def load_known(ds: KnownDataset, split: str, cache_dir: str | Path | None = None, *,
               progress: bool = True) -> ArrayData:
    """Fetch (if needed) and parse ``ds`` / ``split``."""
    files = {role: fetch(ds.files[role], cache_dir, progress=progress) for role in _needed_roles(ds, split)}
    return ds.reader(ds, split, files, cache_root(cache_dir), progress)
