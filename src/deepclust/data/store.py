"""The decoded image store: every source becomes one cached ``uint8 (N, S, S, 3)`` array.

``load_images(spec)`` is the one way in. Images are decoded once into
``<cache>/stores/<source_id>/`` (``images.npy``, a real ``.npy`` opened as a read-only memory
map, plus ``index.json`` with paths, labels, class names, the skipped list and the working
size). ``source_id`` hashes the resolved spec, the files' relative paths + sizes + mtimes (or
the array file's size/mtime, or the official checksums), the requested size and the format
version: an unchanged source is reused without decoding; any added, removed or modified file
gives a new id and a rebuild.

The store is built in a temporary directory and renamed into place, so a run killed halfway
never leaves a directory that looks complete; leftovers of dead runs are removed later.
Before the memory map is written its whole size is reserved on disk (``posix_fallocate``,
after a ``shutil.disk_usage`` check), so a full disk is a clear `DataError` and never a
SIGBUS; the temporary folder is removed. ``index.json`` records a CRC-32 of
``images.npy``, checked each time the store is opened: damaged bytes in the cache give a
warning and a rebuild, never silently wrong images.

Working size ``S``: ``size`` if given, else the most common shorter side of the images if it
is at most ``max_size``, else ``max_size`` (small images stay as they are, large ones come
down). Non-square images: shorter side resized to ``S``, centre square kept.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import os
import shutil
import socket
import uuid
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from deepclust.data.decode import decode_image, fit_square, probe_image_size, reason_category
from deepclust.data.known import cache_root
from deepclust.data.sources import ArrayData, Source, open_source
from deepclust.errors import BadImageError, DataError

__all__ = ["ImageStore", "load_images", "load_source", "write_skipped_csv", "summarize_skipped", "FORMAT_VERSION"]

log = logging.getLogger(__name__)

#: Bump when the on-disk layout or the decoding changes, so old stores are not reused.
FORMAT_VERSION = 2
#: Images probed (evenly spaced) to choose the working size of a folder.
_SIZE_PROBES = 512
_ARRAY_CHUNK = 1024


@dataclass
class ImageStore:
    """Decoded images of one source at one working size (see docs/ARCHITECTURE.md)."""

    images: np.ndarray  # (N, S, S, 3) uint8, a read-only np.memmap
    paths: list[str]  # original path, or "<source>#<index>" for array sources
    labels: np.ndarray | None  # (N,) int64, -1 where unknown; None if the source has none
    class_names: list[str] | None  # index -> name for labels
    skipped: list[tuple[str, str]]  # (path, reason) for every input that was not usable
    source_id: str  # stable hash of the source + working size (cache key)
    directory: Path | None = None  # where the store lives in the cache

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """The working size ``S``."""
        return int(self.images.shape[1])


# --------------------------------------------------------------------------- public helpers


def summarize_skipped(skipped: list[tuple[str, str]], total: int) -> str:
    """``"skipped 3 of 120 files: 2 corrupt, 1 not an image"``."""
    counts = Counter(reason_category(r) for _, r in skipped)
    parts = ", ".join(f"{n} {cat}" for cat, n in counts.most_common())
    return f"skipped {len(skipped)} of {total} files" + (f": {parts}" if parts else "")


def write_skipped_csv(store: ImageStore, path: str | Path) -> Path:
    """Write ``path,reason`` rows (with a header) for every skipped input; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reason"])
        writer.writerows(store.skipped)
    return path


# --------------------------------------------------------------------------- loading


def load_images(spec: str | os.PathLike, *, size: int | None = None, max_size: int = 96,
                cache_dir: str | Path | None = None, split: str | None = None, progress: bool = True,
                workers: int | None = None) -> ImageStore:
    """Decode (once) and return the images of ``spec`` as an :class:`ImageStore`.

    Args:
        spec: a folder, a ``.npz`` file, ``digits`` or a known name (``cifar10:test``).
        size: working size ``S``; ``None`` picks it from the data (see module docstring).
        max_size: upper bound for the automatic size.
        cache_dir: cache root (default ``$DEEPCLUST_CACHE`` or ``~/.cache/deepclust``).
        split: split of a known data set, or a sub-folder of a folder source.
        progress: show tqdm progress bars.
        workers: decoding threads for folders (default: up to 4, bounded by the CPU count).

    Raises:
        DataError: missing, empty or all-bad source, or an unreadable format.
    """
    for name, value in (("size", size), ("max_size", max_size)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise DataError(f"{name} must be a positive integer, got {value!r}")
    source = open_source(spec, split, cache_dir=cache_dir, progress=progress)
    return load_source(source, size=size, max_size=max_size, cache_dir=cache_dir, progress=progress,
                       workers=workers)


def load_source(source: Source, *, size: int | None = None, max_size: int = 96,
                cache_dir: str | Path | None = None, progress: bool = True,
                workers: int | None = None) -> ImageStore:
    """`load_images` for an already resolved `Source` (e.g. the image files a list of
    image-caption pairs names, `deepclust.data.pairs`): decoded once, cached the same way."""
    size_key = f"size={size}" if size is not None else f"auto<={max_size}"
    key = json.dumps([FORMAT_VERSION, source.kind, source.spec, source.fingerprint, size_key])
    source_id = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
    stores = cache_root(cache_dir) / "stores"
    final = stores / source_id
    store = _open_existing(final)
    if store is None:
        _remove_dead_temp_dirs(stores)
        store = _build(source, source_id, final, size=size, max_size=max_size, progress=progress, workers=workers)
    total = len(store) + len(store.skipped)
    if store.skipped:
        log.warning("%s in %s (the commands list each one with its reason in skipped.csv; in Python: "
                    "ImageStore.skipped)", summarize_skipped(store.skipped, total), source.spec)
    return store


def images_checksum(path: Path) -> str:
    """CRC-32 of a file's bytes, read in 16 MiB blocks (about 1 GB/s)."""
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(16 << 20):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def _reserve(path: Path, n_bytes: int) -> None:
    """Reserve ``n_bytes`` for ``path`` now, so writing the memory map cannot hit a full
    disk (which kills the process with SIGBUS instead of raising)."""
    free = shutil.disk_usage(path.parent).free
    if free < n_bytes:
        raise DataError(f"not enough disk space for the image store: {n_bytes / 2**20:.1f} MiB needed, "
                        f"{free / 2**20:.1f} MiB free in {path.parent.parent}; free space, set "
                        "$DEEPCLUST_CACHE to another disk, or pass a smaller --size")
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, n_bytes)
    except OSError as exc:
        raise DataError(f"cannot reserve {n_bytes / 2**20:.1f} MiB for the image store in {path.parent.parent}: "
                        f"{exc.strerror}; free space or set $DEEPCLUST_CACHE to another disk") from exc
    finally:
        os.close(fd)


def _open_memmap(path: Path, shape: tuple[int, ...]) -> np.memmap:
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    _reserve(path, os.path.getsize(path))
    return images


def _open_existing(directory: Path) -> ImageStore | None:
    index_path = directory / "index.json"
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        if index.get("format_version") != FORMAT_VERSION:
            return None
        images = np.load(directory / "images.npy", mmap_mode="r")
    except (OSError, ValueError):
        return None
    if images.shape != (index["n"], index["size"], index["size"], 3) or images.dtype != np.uint8:
        return None
    if images_checksum(directory / "images.npy") != index.get("checksum"):
        log.warning("the cached image store %s is damaged (its checksum does not match): rebuilding it", directory)
        return None
    labels = np.asarray(index["labels"], dtype=np.int64) if index["labels"] is not None else None
    return ImageStore(images=images, paths=index["paths"], labels=labels, class_names=index["class_names"],
                      skipped=[tuple(s) for s in index["skipped"]], source_id=index["source_id"],
                      directory=directory)


def _remove_dead_temp_dirs(stores: Path) -> None:
    """Delete temp dirs of builds on this host whose process no longer runs (killed runs)."""
    if not stores.is_dir():
        return
    host = socket.gethostname()
    for d in stores.glob(".tmp-*"):
        parts = d.name.split("~")
        if len(parts) != 4 or parts[1] != host:
            continue
        try:
            os.kill(int(parts[2]), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except (PermissionError, ValueError):
            pass


# --------------------------------------------------------------------------- building


def _build(source: Source, source_id: str, final: Path, *, size: int | None, max_size: int, progress: bool,
           workers: int | None) -> ImageStore:
    tmp = final.parent / f".tmp-{source_id}~{socket.gethostname()}~{os.getpid()}~{uuid.uuid4().hex[:8]}"
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        if source.records is not None:
            meta = _build_from_files(source, tmp, size=size, max_size=max_size, progress=progress, workers=workers)
        else:
            meta = _build_from_arrays(source, tmp, size=size, max_size=max_size, progress=progress)
        meta.update(format_version=FORMAT_VERSION, source_id=source_id, spec=source.spec, kind=source.kind,
                    checksum=images_checksum(tmp / "images.npy"))
        with open(tmp / "index.json", "w", encoding="utf-8") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process finished the same store first (or a stale invalid one is there).
            if _open_existing(final) is None:
                shutil.rmtree(final, ignore_errors=True)
                os.rename(tmp, final)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if exc.errno == errno.ENOSPC:
            raise DataError(f"the disk holding the image cache ({final.parent}) is full: free space or set "
                            "$DEEPCLUST_CACHE to another disk") from exc
        raise DataError(f"cannot write the image store in {final.parent}: {exc.strerror or exc} "
                        "(set $DEEPCLUST_CACHE to a writable folder)") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    store = _open_existing(final)
    if store is None:  # pragma: no cover - would mean the file system lost our write
        raise DataError(f"the image store written to {final} cannot be read back")
    return store


def _choose_size(sides: list[int], max_size: int) -> int:
    if not sides:
        return max_size
    counts = Counter(sides)
    # Most common shorter side; ties go to the larger side (less upscaling of the others).
    common = max(counts, key=lambda s: (counts[s], s))
    return min(common, max_size)


def _probe_sides(paths: list[str]) -> list[int]:
    step = max(1, len(paths) // _SIZE_PROBES)
    sides = []
    for p in paths[::step][:_SIZE_PROBES]:
        try:
            sides.append(min(probe_image_size(p)))
        except BadImageError:
            pass  # reported when decoding
    return sides


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def _decode_or_reason(path: str, size: int) -> tuple[np.ndarray | None, str | None]:
    try:
        return decode_image(path, size), None
    except BadImageError as e:
        return None, e.reason
    except Exception as e:  # never crash halfway: an unexpected decoder error skips that file
        return None, f"unreadable: {type(e).__name__}: {e}"


def _build_from_files(source: Source, tmp: Path, *, size: int | None, max_size: int, progress: bool,
                      workers: int | None) -> dict:
    records = source.records
    if records is None:
        raise DataError(f"source {source.spec!r} lists no image files")
    paths = [r.path for r in records]
    s = size if size is not None else _choose_size(_probe_sides(paths), max_size)
    images = _open_memmap(tmp / "images.npy", (len(paths), s, s, 3))
    kept: list[int] = []
    skipped: list[tuple[str, str]] = list(source.skipped)
    n_workers = workers or _default_workers()
    bar = tqdm(total=len(paths), desc=f"decode {Path(source.spec).name} @{s}px", unit=" img", disable=not progress)
    try:
        if n_workers == 1:
            results = (_decode_or_reason(p, s) for p in paths)
            _collect(results, paths, images, kept, skipped, bar)
        else:
            # Pillow releases the GIL while decoding and resizing, so threads overlap well.
            with ThreadPoolExecutor(n_workers) as pool:
                _collect(pool.map(_decode_or_reason, paths, [s] * len(paths)), paths, images, kept, skipped, bar)
    finally:
        bar.close()
    if not kept:
        del images
        raise DataError(f"no usable images in {source.spec}: all {len(paths)} files were skipped "
                        f"({summarize_skipped(skipped, len(paths)).split(': ', 1)[-1]}). "
                        f"First: {skipped[0][0]}: {skipped[0][1]}")
    images.flush()
    if len(kept) < len(paths):
        images = _shrink(tmp / "images.npy", images, len(kept))
    del images
    labels = [records[i].label for i in kept] if source.has_labels else None
    return dict(n=len(kept), size=s, paths=[paths[i] for i in kept], labels=labels,
                class_names=source.class_names, skipped=skipped)


def _collect(results, paths, images, kept, skipped, bar) -> None:
    for i, (array, reason) in enumerate(results):
        if array is None:
            skipped.append((paths[i], reason))
        else:
            images[len(kept)] = array
            kept.append(i)
        bar.update(1)


def _shrink(path: Path, images: np.memmap, n: int) -> np.memmap:
    """Rewrite ``images.npy`` keeping the first ``n`` rows (the good ones, written compacted)."""
    smaller_path = path.with_name("images.shrink.npy")
    smaller = _open_memmap(smaller_path, (n,) + images.shape[1:])
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        smaller[start:stop] = images[start:stop]
    smaller.flush()
    del images
    os.replace(smaller_path, path)
    return smaller


def _to_rgb_chunk(chunk: np.ndarray) -> np.ndarray:
    """(B,H,W) / (B,H,W,1|3|4) uint8 -> (B,H,W,3); alpha composited over white like the decoder."""
    if chunk.ndim == 3:
        chunk = chunk[..., None]
    if chunk.shape[3] == 1:
        return np.repeat(chunk, 3, axis=3)
    if chunk.shape[3] == 4:
        alpha = chunk[..., 3:4].astype(np.float32) / 255.0
        rgb = chunk[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.rint(rgb).astype(np.uint8)
    return np.ascontiguousarray(chunk)


def _build_from_arrays(source: Source, tmp: Path, *, size: int | None, max_size: int, progress: bool) -> dict:
    if source.load_arrays is None:
        raise DataError(f"source {source.spec!r} holds no image arrays")
    data: ArrayData = source.load_arrays()
    n, h, w = data.images.shape[:3]
    if n == 0:
        raise DataError(f"no images in {source.spec}")
    s = size if size is not None else min(min(h, w), max_size)
    images = _open_memmap(tmp / "images.npy", (n, s, s, 3))
    with tqdm(total=n, desc=f"store {source.spec} @{s}px", unit=" img", disable=not progress) as bar:
        for start in range(0, n, _ARRAY_CHUNK):
            chunk = _to_rgb_chunk(np.asarray(data.images[start:start + _ARRAY_CHUNK]))
            if (h, w) != (s, s):
                chunk = np.stack([np.asarray(fit_square(Image.fromarray(im), s)) for im in chunk])
            images[start:start + len(chunk)] = chunk
            bar.update(len(chunk))
    images.flush()
    del images
    labels = data.labels.tolist() if data.labels is not None else None
    return dict(n=n, size=s, paths=[f"{source.spec}#{i}" for i in range(n)], labels=labels,
                class_names=data.class_names, skipped=[])
