"""Ctrl-C and SIGTERM during training: stop cleanly, but never half-way through a checkpoint.

A checkpoint generation is complete or invisible whatever happens (see checkpoint.py), but
an interrupt inside the save would still lose the epoch just trained, and log.csv is
rewritten in the same block. While `guard.deferred()` is active, SIGINT/SIGTERM are only
noted; the KeyboardInterrupt is raised as soon as the block ends, so the epoch's checkpoint
and log row are both on disk. A SIGKILL cannot be deferred: then the previous generation
stays current (tests/robustness/test_checkpoint_kill.py).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class InterruptGuard:
    def __init__(self) -> None:
        self._deferring = False
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> InterruptGuard:
        # signal handlers can only be set from the main thread (e.g. not inside a notebook worker thread)
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        if self._deferring:
            self._pending = signum
            return
        raise KeyboardInterrupt(f"signal {signum}")

    @contextmanager
    def deferred(self) -> Iterator[None]:
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self._pending is not None:
            signum, self._pending = self._pending, None
            raise KeyboardInterrupt(f"signal {signum} (after the checkpoint was completed)")
