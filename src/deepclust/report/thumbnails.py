"""Thumbnails for the HTML gallery: PNG encoding, data URIs and deterministic selection.

Images arrive as the project-wide ``uint8 (N, S, S, 3)`` arrays. Small images (8x8 digits,
32x32 CIFAR) are upscaled with *nearest* neighbour so every pixel stays a crisp block;
large ones are shrunk so the page stays light.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from deepclust.errors import DataError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a ``uint8 (H, W, 3)`` array.

    Accepts ``(H, W)`` grey, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped).
    Float images must already lie in ``[0, 1]`` and are scaled to ``[0, 255]``.
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(
            f"expected an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {arr.shape}; "
            "pass uint8 RGB arrays as produced by deepclust.data.load_images"
        )
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating):
            if arr.size and (np.nanmin(arr) < 0.0 or np.nanmax(arr) > 1.0):
                raise DataError(
                    "float images must lie in [0, 1]; convert to uint8 (0..255) before building a report"
                )
            arr = np.round(np.nan_to_num(arr) * 255.0).astype(np.uint8)
        else:
            raise DataError(f"images must be uint8 or float in [0, 1], got dtype {arr.dtype}")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    elif arr.shape[2] == 4:
        arr = arr[:, :, :3]
    return np.ascontiguousarray(arr)


def png_bytes(image: np.ndarray) -> bytes:
    """Encode an image array (see `as_rgb_uint8`) as PNG bytes."""
    buffer = io.BytesIO()
    # Level 1: measured 2.6x faster than the default 6 on 64 px thumbnails for about the
    # same size (nearest-upscaled pixels repeat, which even fast deflate finds).
    Image.fromarray(as_rgb_uint8(image)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def ensure_png(image_or_png: bytes | np.ndarray) -> bytes:
    """PNG bytes for either PNG bytes (checked) or an image array (encoded)."""
    if isinstance(image_or_png, (bytes, bytearray, memoryview)):
        data = bytes(image_or_png)
        if not data.startswith(PNG_SIGNATURE):
            raise DataError("report extras must be PNG bytes or uint8 image arrays; got bytes that are not a PNG")
        return data
    return png_bytes(np.asarray(image_or_png))


def png_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` URI that embeds ``png`` in the page itself."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def make_thumbnail(image: np.ndarray, size: int = 64) -> np.ndarray:
    """Resize an image so its longer side is about ``size`` pixels.

    Smaller images are enlarged by an integer factor with nearest-neighbour sampling
    (an 8x8 digit becomes 64x64 blocks rather than a blur); larger ones are shrunk with
    a box filter, which averages instead of aliasing.
    """
    rgb = as_rgb_uint8(image)
    height, width = rgb.shape[:2]
    longest = max(height, width)
    if longest < size:
        factor = max(1, size // longest)
        return np.repeat(np.repeat(rgb, factor, axis=0), factor, axis=1)
    if longest > size:
        scale = size / longest
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        return np.asarray(Image.fromarray(rgb).resize(new_size, Image.Resampling.BOX))
    return rgb


def thumbnail_data_uri(image: np.ndarray, size: int = 64) -> str:
    """Thumbnail of ``image`` as an embeddable PNG data URI."""
    return png_data_uri(png_bytes(make_thumbnail(image, size)))


def pick_thumbnails(
    member_indices: np.ndarray, embeddings: np.ndarray | None, max_count: int
) -> np.ndarray:
    """Choose which members of one cluster to show, deterministically.

    With embeddings, the members closest (Euclidean) to the cluster's mean come first: they
    are the most typical images, which is what a reader wants to judge a cluster by.
    Ties are broken by index (stable sort), so the choice never changes between runs.
    Without embeddings, the first ``max_count`` members in index order are shown.

    Args:
        member_indices: ``(M,)`` indices into the full data set, in increasing order.
        embeddings: ``(N, D)`` float features of the full data set, or None.
        max_count: how many to return at most.

    Returns:
        ``(min(M, max_count),)`` indices into the full data set.
    """
    member_indices = np.asarray(member_indices, dtype=np.int64)
    if max_count <= 0 or member_indices.size == 0:
        return member_indices[:0]
    if embeddings is None:
        return member_indices[:max_count]
    members = np.asarray(embeddings[member_indices], dtype=np.float64)
    centroid = members.mean(axis=0, keepdims=True)
    distances = ((members - centroid) ** 2).sum(axis=1)
    order = np.argsort(distances, kind="stable")
    return member_indices[order[:max_count]]
