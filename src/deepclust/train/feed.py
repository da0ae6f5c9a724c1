"""Batches from the in-memory / memory-mapped uint8 store to the device.

The loop hands over the epoch's index order as a (steps, batch) array; a background
thread gathers `images[idx]` (numpy fancy indexing on the memmap), wraps it as a torch
uint8 tensor (pinned when the target is CUDA) and queues a few batches ahead, so reading
overlaps the training step. Each batch is a dict ``{"images": uint8 (B, S, S, 3),
"index": int64 (B,)}`` on the device, the input of a method's ``collate``. The order is
fixed in advance, so prefetching never changes what is trained on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator

import numpy as np
import torch


def _load(images: np.ndarray, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    batch = torch.from_numpy(np.ascontiguousarray(images[idx]))
    index = torch.from_numpy(idx.astype(np.int64))
    if device.type == "cuda":
        batch = batch.pin_memory()
    return batch, index


class BatchFeeder:
    """Iterate ``{"images": uint8 (B,S,S,3), "index": (B,)}`` on `device` for each row of `order`."""

    def __init__(self, images: np.ndarray, order: np.ndarray, device: torch.device, prefetch: int = 2):
        self.images, self.order, self.device = images, order, device
        self.prefetch = max(0, int(prefetch))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None

    def __len__(self) -> int:
        return len(self.order)

    def _produce(self, q: queue.Queue) -> None:
        try:
            for idx in self.order:
                item = _load(self.images, idx, self.device)
                while not self._stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as exc:  # hand the error to the consumer instead of dying silently
            q.put(exc)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.prefetch == 0:
            for idx in self.order:
                batch, index = _load(self.images, idx, self.device)
                yield {"images": batch.to(self.device), "index": index.to(self.device)}
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch + 1)
        self._queue = q
        self._thread = threading.Thread(target=self._produce, args=(q,), daemon=True, name="deepclust-feed")
        self._thread.start()
        try:
            for _ in range(len(self.order)):
                item = q.get()
                if isinstance(item, BaseException):
                    raise item
                batch, index = item
                yield {"images": batch.to(self.device, non_blocking=True),
                       "index": index.to(self.device, non_blocking=True)}
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer. It may be blocked on a full queue when the epoch ends before its
        order does (a time budget shortening the epoch): emptying the queue wakes it at once
        instead of after its 0.1 s put timeout, which cost up to 0.1 s per epoch."""
        self._stop.set()
        if self._queue is not None:
            while True:
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._queue = None
