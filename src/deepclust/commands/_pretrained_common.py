"""Argument and I/O helpers shared by the pretrained-model commands (zeroshot, attention, evaluate)."""

from __future__ import annotations

# Pretrained ViTs see 224 px crops; decoding sources at up to this size keeps detail that a
# 96 px store would throw away (smaller images are not enlarged by the store).
PRETRAINED_MAX_SIZE = 224


def add_common_args(p, *, size_help: str | None = None) -> None:
    p.add_argument("--size", type=int, default=None, metavar="S",
                   help=size_help or ("working image size in pixels (default: from the source, "
                                      f"at most {PRETRAINED_MAX_SIZE})"))
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="images per forward pass (default: 64)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 (default: auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
