"""Output folders: checked before the work starts, and locked while a run writes into them.

`check_writable_dir(path)` fails in milliseconds, with a clear `DeepclustError`, when the
folder names an existing file, cannot be created, or is not writable (read-only folder or
file system), instead of a traceback after minutes of decoding and clustering.

`output_lock(path)` holds ``path/.deepclust.lock`` (the owner's pid) while a command writes
there, so two runs into one ``--out`` cannot mix their files: the second is refused with the
owner's pid. A lock left by a process that no longer exists (killed, power loss) is taken
over. The lock is re-entrant within one process (``train`` then its final clustering).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from deepclust.errors import DeepclustError

LOCK_FILE = ".deepclust.lock"
_held: dict[str, int] = {}


def check_writable_dir(path: str | Path, what: str = "output folder") -> Path:
    """Create ``path`` if needed and prove it writable (a probe file is created and removed)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DeepclustError(f"{what} {path} exists and is not a folder: choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".deepclust-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise DeepclustError(f"{what} {path} is not writable ({exc.strerror or exc}): choose another "
                             "folder or fix its permissions") from exc
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _acquire(lock: Path) -> None:
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            owner = _owner(lock)
            if owner is not None and owner != os.getpid() and _pid_alive(owner):
                raise DeepclustError(
                    f"{lock.parent} is in use by another deepclust run (pid {owner}): wait for it to finish, "
                    f"or choose another --out (if no such run exists, delete {lock})") from None
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()}\n")
        return
    raise DeepclustError(f"cannot lock {lock.parent}: another run keeps taking it; choose another --out")


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Check ``path`` (see `check_writable_dir`) and hold its lock for the block."""
    path = check_writable_dir(path)
    lock = path / LOCK_FILE
    key = str(path.resolve())
    if _held.get(key, 0) == 0:
        _acquire(lock)
    _held[key] = _held.get(key, 0) + 1
    try:
        yield path
    finally:
        _held[key] -= 1
        if _held[key] == 0:
            del _held[key]
            if _owner(lock) == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
