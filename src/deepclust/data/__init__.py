"""Data layer: every source (folder, .npz, digits, known data sets) becomes one cached
``uint8 (N, S, S, 3)`` :class:`ImageStore` through :func:`load_images`."""

from deepclust.data.decode import decode_image
from deepclust.data.known import KNOWN_DATASETS, cache_root
from deepclust.data.sources import open_source
from deepclust.data.store import ImageStore, load_images, summarize_skipped, write_skipped_csv

__all__ = [
    "ImageStore",
    "load_images",
    "write_skipped_csv",
    "summarize_skipped",
    "decode_image",
    "open_source",
    "cache_root",
    "KNOWN_DATASETS",
]
