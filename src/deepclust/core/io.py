"""The one atomic writer: every file deepclust writes goes through `atomic_write_bytes`.

The data goes to a temporary file in the same directory, is flushed and fsync'ed, and is
renamed over the target with `os.replace` (atomic on POSIX), then the directory is fsync'ed.
A crash or kill at any moment leaves either the old file or the new one, never half a file.
CSV files are written with every field quoted as needed by the `csv` module, so any file
name (commas, quotes, newlines) round-trips.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename inside it survives a power loss (best effort)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module doc); returns ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the file the mode a plain open() would (umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_symlink(path: str | Path, target: str) -> Path:
    """Point the symlink ``path`` at ``target`` (relative) with one ``os.replace``: readers see
    the old target or the new one, never no link; the directory is fsync'ed."""
    import uuid

    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.tmp"
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """UTF-8 text; lone surrogates (file names that are not valid UTF-8, as Python decodes
    them with ``surrogateescape``) are written back as their original bytes."""
    return atomic_write_bytes(path, text.encode("utf-8", errors="surrogateescape"))


def atomic_write_json(path: str | Path, obj: Any, *, sort_keys: bool = False) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n")


def csv_text(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """CSV with a header row; fields with separators, quotes or line breaks are quoted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def atomic_write_csv(path: str | Path, header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> Path:
    return atomic_write_text(path, csv_text(header, rows))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    """``np.save`` (no pickle) through the atomic writer; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    return atomic_write_bytes(path, buffer.getvalue())


def atomic_save_safetensors(path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> Path:
    """Tensors (torch) as safetensors through the atomic writer."""
    from safetensors.torch import save

    # clone: safetensors refuses tensors that share storage (tied weights, views)
    data = save({k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}, metadata=metadata)
    return atomic_write_bytes(path, data)
