"""Argument and I/O helpers shared by the pretrained-model commands (zeroshot, attention, evaluate)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

# Pretrained ViTs see 224 px crops; decoding sources at up to this size keeps detail that a
# 96 px store would throw away (smaller images are not enlarged by the store).
PRETRAINED_MAX_SIZE = 224


def resolve_device(device: str) -> str:
    if device in (None, "", "auto"):
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def add_common_args(p, *, size_help: str | None = None) -> None:
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help=size_help or f"working image size in pixels (default: from the source, at most {PRETRAINED_MAX_SIZE})")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per forward pass (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def write_json_atomic(path: Path, obj: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_csv_atomic(path: Path, header: list[str], rows: list[list]) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    os.replace(tmp, path)
    return path
