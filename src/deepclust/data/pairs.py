"""Image-caption pairs: the one way in for image-text training (CLIP, ALIGN, UniCL).

``load_pairs(spec)`` returns a `PairStore`: the decoded images (an `ImageStore`, decoded once
and cached like any source) plus every image's captions. ``spec`` is one of

* a **CSV** file (``.csv``/``.tsv``) with a header naming the columns ``path`` and ``caption``
  (extra columns are ignored), or a **JSONL** file (``.jsonl``) of
  ``{"path": ..., "caption": "..." | ["...", ...]}`` objects. Several rows (or a list) may
  give one image several captions; a training step draws one of them at random. Relative
  paths are relative to the file's folder.
* an image **folder with sidecar captions**: ``cat1.jpg`` + ``cat1.txt`` (one caption per
  non-empty line), searched recursively like any folder source.
* an image **folder with class sub-folders** (or any labelled source such as ``cifar10``):
  each class name becomes captions through prompt templates (``CAPTION_TEMPLATES`` or
  ``templates=``), Florence/UniCL's image-label data; the class id is kept as the image's
  UniCL label (``pair_labels``), so same-class pairs are positives for ``--method unicl``.

Rows that cannot be used are skipped and listed with their reason in ``store.skipped``
(written to ``skipped.csv`` like undecodable images): a row without a path or caption, an
empty caption, an image file that does not exist, an image that does not decode, an image
with no sidecar caption. A source with no usable pair is a `DataError`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepclust.data.sources import ImageRecord, Source, scan_folder
from deepclust.data.store import ImageStore, load_images, load_source
from deepclust.errors import DataError

__all__ = ["CAPTION_TEMPLATES", "PairStore", "load_pairs", "pair_source_kind"]

#: Prompt templates that turn a class name into captions (8 of CLIP's ImageNet templates;
#: `deepclust.zeroshot.DEFAULT_TEMPLATES` has others, for evaluation on unseen prompts).
CAPTION_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a low resolution photo of the {}.",
    "a close-up photo of a {}.",
    "a dark photo of the {}.",
    "a photo of the large {}.",
    "a rendering of a {}.",
    "art of the {}.",
)
_TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


@dataclass
class PairStore(ImageStore):
    """An `ImageStore` whose images have captions.

    texts: the distinct caption strings; caption_ids ``(M,)`` int64 indices into ``texts``;
    caption_offsets ``(N + 1,)``: the captions of image i are
    ``caption_ids[caption_offsets[i]:caption_offsets[i + 1]]`` (at least one each);
    pair_labels ``(N,)`` int64: UniCL's label of each image (its class id for templated
    class data, else a distinct id per image); kind: csv, jsonl, sidecar or templates.
    """

    texts: list[str] = field(default_factory=list)
    caption_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    caption_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    pair_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kind: str = "csv"

    def captions_of(self, i: int) -> list[str]:
        """The caption strings of image ``i``."""
        lo, hi = int(self.caption_offsets[i]), int(self.caption_offsets[i + 1])
        return [self.texts[j] for j in self.caption_ids[lo:hi]]

    @property
    def n_captions(self) -> int:
        return int(len(self.caption_ids))


def pair_source_kind(spec: str | os.PathLike) -> str:
    """``csv``, ``jsonl``, ``sidecar`` or ``labels`` (class names through templates)."""
    path = Path(os.fspath(spec)).expanduser()
    if path.is_file():
        if path.suffix.lower() in _TABLE_SUFFIXES:
            return "csv"
        if path.suffix.lower() == ".jsonl":
            return "jsonl"
        raise DataError(f"{path}: image-caption pairs come as a .csv/.tsv (columns path, caption), a .jsonl "
                        "({\"path\": ..., \"caption\": ...} per line), or a folder")
    if path.is_dir() and any(p.suffix.lower() == ".txt" and not p.name.startswith(".") for p in path.rglob("*.txt")):
        return "sidecar"
    return "labels"


def load_pairs(spec: str | os.PathLike, *, size: int | None = None, max_size: int = 96,
               templates: Sequence[str] | None = None, cache_dir: str | Path | None = None,
               progress: bool = True) -> PairStore:
    """Decode the images of ``spec`` once and attach their captions (see the module doc).

    Raises:
        DataError: unreadable or empty table, no usable pair, a labelled source whose
            templates lack ``{}``, a source with neither captions nor class folders.
    """
    kind = pair_source_kind(spec)
    if kind in ("csv", "jsonl"):
        return _from_table(Path(os.fspath(spec)).expanduser().resolve(), kind, size=size, max_size=max_size,
                           cache_dir=cache_dir, progress=progress)
    if kind == "sidecar":
        return _from_sidecars(Path(os.fspath(spec)).expanduser().resolve(), size=size, max_size=max_size,
                              cache_dir=cache_dir, progress=progress)
    store = load_images(spec, size=size, max_size=max_size, cache_dir=cache_dir, progress=progress)
    if store.labels is None or not store.class_names:
        raise DataError(f"{spec} has no captions: give a .csv/.jsonl of (path, caption) pairs, a folder with a "
                        ".txt caption beside each image, or a folder with class sub-folders (names become "
                        "captions through prompt templates)")
    return _from_labels(store, templates)


# --------------------------------------------------------------------------- builders


def _pack(store: ImageStore, captions: list[list[str]], keep: np.ndarray, skipped: list[tuple[str, str]],
          labels: np.ndarray | None, kind: str) -> PairStore:
    """A `PairStore` of the images ``keep`` of ``store`` (all: no copy) with their captions."""
    if len(keep) == 0:
        first = skipped[0] if skipped else ("", "no pairs")
        raise DataError(f"no usable image-caption pair in {store.paths[0] if store.paths else 'the source'}'s "
                        f"source: {len(skipped)} rows skipped; first: {first[0]}: {first[1]}")
    whole = len(keep) == len(store)
    images = store.images if whole else np.asarray(store.images[keep])
    source_id = store.source_id
    if not whole:
        source_id += "-" + hashlib.sha256(np.asarray(keep, np.int64).tobytes()).hexdigest()[:12]
    index: dict[str, int] = {}
    ids: list[int] = []
    offsets = [0]
    for i in keep:
        for text in captions[i]:
            ids.append(index.setdefault(text, len(index)))
        offsets.append(len(ids))
    store_labels = None if store.labels is None else np.asarray(store.labels)[keep]
    pair_labels = np.arange(len(keep), dtype=np.int64) if labels is None else np.asarray(labels)[keep]
    return PairStore(images=images, paths=[store.paths[i] for i in keep], labels=store_labels,
                     class_names=store.class_names, skipped=list(store.skipped) + skipped, source_id=source_id,
                     directory=store.directory, texts=list(index), caption_ids=np.asarray(ids, np.int64),
                     caption_offsets=np.asarray(offsets, np.int64), pair_labels=pair_labels.astype(np.int64),
                     kind=kind)


def _from_labels(store: ImageStore, templates: Sequence[str] | None) -> PairStore:
    templates = tuple(templates) if templates else CAPTION_TEMPLATES
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise DataError(f"caption template {bad[0]!r} has no '{{}}' where the class name goes "
                        "(e.g. 'a photo of a {}.')")
    assert store.labels is not None and store.class_names is not None
    names = [n.replace("_", " ") for n in store.class_names]
    per_class = [[t.format(n) for t in templates] for n in names]
    labels = np.asarray(store.labels)
    captions = [per_class[c] if c >= 0 else [] for c in labels]
    keep = np.flatnonzero(labels >= 0)
    skipped = [(store.paths[i], "no class folder, so no caption") for i in np.flatnonzero(labels < 0)]
    return _pack(store, captions, keep, skipped, labels, "templates")


def _from_sidecars(root: Path, *, size: int | None, max_size: int, cache_dir: str | Path | None,
                   progress: bool) -> PairStore:
    scanned = scan_folder(root)
    records = [r for r in scanned.records or [] if not r.rel.lower().endswith(".txt")]
    if not records:
        raise DataError(f"{root} holds caption files but no images")
    source = Source(kind="pairs-folder", spec=scanned.spec, fingerprint=scanned.fingerprint, records=records,
                    class_names=scanned.class_names, has_labels=scanned.has_labels, skipped=scanned.skipped)
    store = load_source(source, size=size, max_size=max_size, cache_dir=cache_dir, progress=progress)
    captions, skipped = [], []
    for path in store.paths:
        side = Path(path).with_suffix(".txt")
        lines = _read_lines(side) if side.is_file() else None
        if lines is None:
            skipped.append((path, f"no caption file {side.name}"))
        elif not lines:
            skipped.append((path, f"empty caption file {side.name}"))
        captions.append(lines or [])
    keep = np.asarray([i for i, c in enumerate(captions) if c], np.int64)
    return _pack(store, captions, keep, skipped, None, "sidecar")


def _read_lines(path: Path) -> list[str] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _table_rows(path: Path, kind: str, skipped: list[tuple[str, str]]) -> list[tuple[str, object, object]]:
    """``(where, path, caption)`` per row (caption may be a list: JSONL); lines that are not
    JSON objects go to ``skipped``."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if kind == "jsonl":
        rows: list[tuple[str, object, object]] = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                obj = None
            if not isinstance(obj, dict):
                skipped.append((f"{path.name}:{n}", "not a JSON object"))
                continue
            rows.append((f"{path.name}:{n}", obj.get("path"), obj.get("caption")))
        return rows
    reader = csv.DictReader(text.splitlines(), delimiter=_TABLE_SUFFIXES[path.suffix.lower()])
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if "path" not in fields or "caption" not in fields:
        raise DataError(f"{path} needs a header row naming the columns 'path' and 'caption' "
                        f"(found: {', '.join(fields) or 'nothing'})")
    reader.fieldnames = fields
    return [(f"{path.name}:{n}", row.get("path"), row.get("caption")) for n, row in enumerate(reader, 2)]


def _from_table(path: Path, kind: str, *, size: int | None, max_size: int, cache_dir: str | Path | None,
                progress: bool) -> PairStore:
    skipped: list[tuple[str, str]] = []
    by_image: dict[str, list[str]] = {}
    for where, image, caption in _table_rows(path, kind, skipped):
        given = caption if isinstance(caption, list) else [caption]
        texts = [" ".join(t.split()) for t in given if isinstance(t, str) and t.strip()]
        if not isinstance(image, str) or not image.strip():
            skipped.append((where, "no image path"))
            continue
        full = (path.parent / image.strip()).resolve()
        if not texts:
            skipped.append((where, "empty caption" if caption is not None else "no caption"))
        elif not full.is_file():
            skipped.append((str(full), f"missing image file ({where})"))
        else:
            by_image.setdefault(str(full), []).extend(texts)
    if not by_image:
        first = skipped[0] if skipped else (str(path), "no rows")
        raise DataError(f"no usable image-caption pair in {path} ({len(skipped)} rows skipped; first: "
                        f"{first[0]}: {first[1]})")
    records, h = [], hashlib.sha256(path.read_bytes())
    for image_path in by_image:
        st = os.stat(image_path)
        records.append(ImageRecord(image_path, image_path, -1, st.st_size, st.st_mtime_ns))
        h.update(f"{image_path}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ctime_ns}\n".encode("utf-8", "surrogateescape"))
    source = Source(kind=f"pairs-{kind}", spec=str(path), fingerprint=h.hexdigest(), records=records)
    store = load_source(source, size=size, max_size=max_size, cache_dir=cache_dir, progress=progress)
    captions = [by_image[p] for p in store.paths]
    return _pack(store, captions, np.arange(len(store)), skipped, None, kind)
