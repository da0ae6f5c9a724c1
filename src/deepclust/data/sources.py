"""Turn a source spec into something the store can decode: a list of files or an array.

A spec is one of

* a **folder** (searched recursively; hidden files and folders are ignored). When images sit
  in class sub-folders, the top-level sub-folder names are the labels (sorted names -> 0, 1,
  ...; used for evaluation only). Files directly in the root get label ``-1`` when class
  folders exist; a folder without class sub-folders has no labels (``None``). With
  ``split="test"`` and a ``test`` sub-folder, that sub-folder is the source.
* a **.npz** file with ``images`` ``(N, H, W)`` or ``(N, H, W, C)`` uint8 (``C`` in 1, 3, 4),
  optional ``labels`` ``(N,)`` integers and optional ``class_names`` (strings).
* ``digits``: scikit-learn's bundled 8x8 digits (1797 images, labels 0..9).
* a known data set name (``cifar10``, ``cifar10:test``, ``cifar100``, ``stl10``, ``mnist``),
  see :mod:`deepclust.data.known`.

An existing path wins over a name, so a folder called ``mnist`` in the working directory is
read as a folder.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepclust.data.known import KNOWN_DATASETS, ArrayData, known_fingerprint, load_known, parse_known_spec
from deepclust.errors import DataError

__all__ = ["ImageRecord", "Source", "ArrayData", "open_source", "scan_folder", "read_npz", "load_digits"]


@dataclass(frozen=True)
class ImageRecord:
    """One candidate image file of a folder source."""

    path: str  # absolute path, as given to the decoder and reported in skipped.csv
    rel: str  # path relative to the source root, '/'-separated (stable across machines)
    label: int  # class index, -1 when unknown
    size_bytes: int
    mtime_ns: int


@dataclass
class Source:
    """A resolved source. Folder sources list ``records``; array sources load lazily."""

    kind: str  # "folder" | "npz" | "digits" | "known"
    spec: str  # resolved, human-readable (absolute path or "cifar10:test"); part of the cache key
    fingerprint: str  # changes whenever the content changes (paths, sizes, mtimes, checksums)
    records: list[ImageRecord] | None = None
    class_names: list[str] | None = None
    has_labels: bool = False
    load_arrays: Callable[[], ArrayData] | None = field(default=None, repr=False)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # folders / links not scanned, with why


def _usage(spec: str) -> str:
    names = ", ".join(KNOWN_DATASETS)
    return (f"'{spec}' is not a folder, a .npz file, 'digits' or a known data set ({names}). "
            "Pass a folder of images (class sub-folders give labels), a .npz with an 'images' array, or a name.")


def open_source(spec: str | os.PathLike, split: str | None = None, *, cache_dir: str | Path | None = None,
                progress: bool = True) -> Source:
    """Resolve ``spec`` (see module docstring). Raises :class:`DataError` for anything unusable."""
    text = os.fspath(spec)
    if not text or not text.strip():
        raise DataError("empty source spec: pass a folder, a .npz file, 'digits' or a known data set name")
    path = Path(text).expanduser()
    if path.exists():
        if path.is_dir():
            if split:
                sub = path / split
                if not sub.is_dir():
                    raise DataError(f"split '{split}' was requested but {path} has no '{split}' sub-folder")
                path = sub
            return scan_folder(path)
        if path.suffix.lower() == ".npz":
            if split:
                raise DataError(f"split='{split}' does not apply to a .npz file ({path})")
            return _npz_source(path)
        raise DataError(f"{path} is a file but not a .npz; pass the folder that contains the images, or a .npz file")
    if text.strip().lower() == "digits":
        if split:
            raise DataError("split does not apply to 'digits' (it has one set of 1797 images)")
        return _digits_source()
    known = parse_known_spec(text, split)
    if known is not None:
        ds, chosen = known
        return Source(kind="known", spec=f"{ds.name}:{chosen}", fingerprint=known_fingerprint(ds, chosen),
                      has_labels=chosen != "unlabeled",
                      load_arrays=lambda: load_known(ds, chosen, cache_dir, progress=progress))
    if any(sep in text for sep in ("/", os.sep)) or path.suffix:
        raise DataError(f"no such file or folder: {path}. " + _usage(text))
    raise DataError(_usage(text))


# --------------------------------------------------------------------------- folders


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _walk(root: Path, skipped: list[tuple[str, str]]):
    """Yield (dirpath, filenames) recursively, skipping hidden entries. Symlinked folders are
    followed only while they stay inside ``root`` (never the file system at large) and only
    once (no loops); links that leave it and folders that cannot be read go to ``skipped``."""
    real_root = os.path.realpath(root)
    seen: set[str] = set()

    def unreadable(err: OSError) -> None:
        skipped.append((str(err.filename), f"unreadable folder: {err.strerror or err}"))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink pointing back up the tree, or a second link to one folder
            dirnames[:] = []
            continue
        seen.add(real)
        kept = []
        for d in sorted(d for d in dirnames if not d.startswith(".")):
            full = os.path.join(dirpath, d)
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                skipped.append((full, f"outside the source: a symlink to {os.path.realpath(full)} (not followed)"))
            else:
                kept.append(d)
        dirnames[:] = kept
        yield dirpath, sorted(f for f in filenames if not f.startswith("."))


def scan_folder(root: str | Path) -> Source:
    """List every non-hidden file under ``root`` with its label, size and mtime."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DataError(f"no such folder: {root}")
    entries: list[tuple[str, str, int, int]] = []  # rel, top-level dir ('' for root), size, mtime
    skipped: list[tuple[str, str]] = []
    changed: dict[str, int] = {}  # rel -> ctime (part of the fingerprint only)
    real_root = os.path.realpath(root)
    for dirpath, filenames in _walk(root, skipped):
        rel_dir = os.path.relpath(dirpath, root)
        top = "" if rel_dir == "." else rel_dir.split(os.sep, 1)[0]
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full) and not _inside(os.path.realpath(full), real_root):
                skipped.append((full, f"outside the source: a symlink to {os.path.realpath(full)} (not followed)"))
                continue
            try:
                st = os.stat(full)
            except OSError:  # dangling symlink: reported by the decoder as unreadable
                st = None
            if st is not None and not os.path.isfile(full):
                continue  # sockets, fifos
            rel = name if rel_dir == "." else f"{rel_dir.replace(os.sep, '/')}/{name}"
            entries.append((rel, top, st.st_size if st else -1, st.st_mtime_ns if st else -1))
            changed[rel] = st.st_ctime_ns if st else -1
    if not entries and skipped:
        raise DataError(f"no files could be read in {root}: {skipped[0][0]}: {skipped[0][1]}")
    if not entries:
        raise DataError(f"no files found in {root} (hidden files are ignored); pass a folder that contains images")
    entries.sort(key=lambda e: e[0])
    class_dirs = sorted({top for _, top, _, _ in entries if top})
    index = {name: i for i, name in enumerate(class_dirs)}
    records = [ImageRecord(str(root / rel), rel, index.get(top, -1), size, mtime)
               for rel, top, size, mtime in entries]
    # The inode change time too: `touch -r` can give a modified file its old mtime (and the
    # same size), but any write or chmod moves ctime, which no user call can set back.
    h = hashlib.sha256()
    for r in records:
        h.update(f"{r.rel}\t{r.size_bytes}\t{r.mtime_ns}\t{changed[r.rel]}\n".encode("utf-8", "surrogateescape"))
    for path, reason in skipped:
        h.update(f"skip\t{path}\t{reason}\n".encode("utf-8", "surrogateescape"))
    return Source(kind="folder", spec=str(root), fingerprint=h.hexdigest(), records=records,
                  class_names=class_dirs or None, has_labels=bool(class_dirs), skipped=skipped)


# --------------------------------------------------------------------------- arrays


#: An array inside an .npz may not expand to more than this many times its compressed size
#: (zip bombs) once it is larger than `_BOMB_MIN_BYTES`; real images compress far less.
_MAX_RATIO = 200
_BOMB_MIN_BYTES = 256 << 20


def _available_memory() -> int:
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_npz(path: Path) -> None:
    """Check an ``.npz`` from its headers before anything is loaded: a zip archive (not a
    renamed ``.npy`` or a truncated file), each member's ``.npy`` header readable, the array
    it declares as large as the member holds, no zip bomb, and the whole fitting in memory."""
    import zipfile

    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            npy = fh.read(6) == b"\x93NUMPY"
        raise DataError(f"{path} is not a .npz archive" + (" (it is a .npy file renamed .npz: load it with "
                        "np.load and save it with np.savez(path, images=...))" if npy else
                        " (truncated, or another format)"))
    total = 0
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(fh, max_header_size=1 << 16)  # the header only
                    header_len = fh.tell()
                if dtype.hasobject:
                    raise DataError(f"cannot read {path}: {info.filename} is an object array, which needs "
                                    "pickle (refused). Store plain numeric/string arrays only")
                declared = int(np.prod(shape, dtype=np.float64) * dtype.itemsize)
                if declared != info.file_size - header_len:
                    raise DataError(f"{path}: {info.filename} declares a {shape} {dtype} array "
                                    f"({declared / 2**30:.3g} GiB) but holds {info.file_size - header_len} bytes: "
                                    "the file is damaged")
                if info.file_size > _BOMB_MIN_BYTES and info.file_size > _MAX_RATIO * max(1, info.compress_size):
                    raise DataError(f"{path}: {info.filename} expands from {info.compress_size} bytes to "
                                    f"{info.file_size / 2**30:.3g} GiB: refused as a zip bomb")
                total += info.file_size
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as e:
        raise DataError(f"cannot read {path} as .npz (damaged or truncated): {e}") from None
    if total > 0.8 * _available_memory():
        raise DataError(f"{path} holds {total / 2**30:.3g} GiB of arrays, more than the free memory: "
                        "split it into smaller files or use a folder of images")


def read_npz(path: str | Path) -> ArrayData:
    """Read and validate an ``.npz`` source (no pickle: object arrays are refused); the
    archive is checked from its headers first (`check_npz`)."""
    path = Path(path)
    check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "images" not in keys:
                raise DataError(f"{path} has no 'images' array (found: {', '.join(sorted(keys)) or 'nothing'}); "
                                "save it with np.savez(path, images=uint8 array (N,H,W[,C]), labels=...)")
            images = z["images"]
            labels = z["labels"] if "labels" in keys else None
            names = z["class_names"] if "class_names" in keys else None
    except DataError:
        raise
    except ValueError as e:  # object arrays need pickle, which we refuse
        raise DataError(f"cannot read {path}: {e}. Store plain numeric/string arrays only") from None
    except (OSError, EOFError, KeyError, TypeError, MemoryError) as e:
        raise DataError(f"cannot read {path} as .npz: {e}") from None
    except Exception as e:  # noqa: BLE001 - zipfile.BadZipFile, zlib.error: a damaged archive
        raise DataError(f"cannot read {path} as .npz (damaged): {type(e).__name__}: {e}") from None
    if images.dtype != np.uint8:
        raise DataError(f"{path}: 'images' must be uint8 (0..255), got {images.dtype}; "
                        "convert with np.clip(x * 255, 0, 255).round().astype(np.uint8) if it is in [0, 1]")
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise DataError(f"{path}: 'images' must have shape (N,H,W) or (N,H,W,C) with C in 1, 3, 4; "
                        f"got {images.shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise DataError(f"{path}: 'images' is empty (shape {images.shape})")
    if labels is not None:
        if labels.shape != (images.shape[0],) or not np.issubdtype(labels.dtype, np.integer):
            raise DataError(f"{path}: 'labels' must be integers of shape ({images.shape[0]},), "
                            f"got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
        if len(labels) and (labels < 0).all():
            import logging

            logging.getLogger(__name__).warning(
                "%s: every label is negative, which means 'unknown': the images are treated as unlabelled "
                "(no ACC/NMI); use labels 0..C-1 for classes", path)
    class_names = None
    if names is not None:
        class_names = [str(n) for n in np.asarray(names).ravel()]
        if labels is not None and labels.max(initial=-1) >= len(class_names):
            raise DataError(f"{path}: 'labels' go up to {labels.max()} but only {len(class_names)} class_names")
    return ArrayData(images, labels, class_names)


def _npz_source(path: Path) -> Source:
    path = path.resolve()
    st = path.stat()
    return Source(kind="npz", spec=str(path), fingerprint=f"npz:{st.st_size}:{st.st_mtime_ns}",
                  has_labels=True, load_arrays=lambda: read_npz(path))


def load_digits() -> ArrayData:
    """scikit-learn's 8x8 digits: values 0..16 scaled to 0..255 uint8, gray (RGB in the store)."""
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return ArrayData(images, bunch.target.astype(np.int64), [str(i) for i in range(10)])


def _digits_source() -> Source:
    import sklearn

    return Source(kind="digits", spec="digits", fingerprint=f"digits:sklearn-{sklearn.__version__}",
                  has_labels=True, load_arrays=load_digits)
