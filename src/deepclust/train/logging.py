"""Per-epoch run log: log.csv (one row per epoch) and, optionally, TensorBoard.

Columns can appear mid-run (a method adds a new `ctx.logs` entry, k-NN runs every few
epochs), so the whole CSV is rewritten (atomically) each epoch with the union of
columns in a stable order. On resume, rows of epochs past the checkpoint are dropped.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from deepclust.core.io import atomic_write_bytes

log = logging.getLogger("deepclust.train")

FIRST_COLUMNS = ["epoch", "step", "loss", "lr", "wd", "images_per_s", "seconds",
                 "n_clusters_used", "entropy", "emb_std", "knn_acc"]


class RunLogger:
    def __init__(self, run_dir: Path, *, tensorboard: bool = False, resume_epoch: int | None = None):
        self.path = Path(run_dir) / "log.csv"
        self.rows: list[dict[str, Any]] = []
        if resume_epoch is not None and self.path.is_file():
            with open(self.path, newline="") as fh:
                self.rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= resume_epoch]
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
            except ImportError:
                warnings.warn("tensorboard is not installed (pip install 'deepclust[tensorboard]'); "
                              "logging to log.csv only", stacklevel=2)

    def log_epoch(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        columns = [c for c in FIRST_COLUMNS if any(c in r for r in self.rows)]
        columns += sorted({c for r in self.rows for c in r} - set(columns))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({c: _fmt(r.get(c, "")) for c in columns})
        atomic_write_bytes(self.path, buf.getvalue().encode("utf-8", "surrogateescape"))
        if self.writer is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    self.writer.add_scalar(f"train/{key}", value, row["epoch"])
            self.writer.flush()
        shown = [f"{k} {_fmt(row[k])}" for k in ("loss", "knn_acc", "n_clusters_used") if k in row]
        log.info("epoch %s: %s (log.csv has every figure)", row["epoch"], ", ".join(shown))
        log.debug("epoch %s: %s", row["epoch"], ", ".join(f"{k}={_fmt(v)}" for k, v in row.items() if k != "epoch"))

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value
