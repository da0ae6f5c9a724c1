"""Decode one image file into an RGB ``uint8`` array, or say exactly why it cannot be used.

Every oddity a real folder of images holds is handled here, so the rest of the toolkit only
ever sees ``uint8 (H, W, 3)``:

* zero-byte, non-image (text named ``.jpg``), corrupt and **truncated** files raise
  :class:`~deepclust.errors.BadImageError` with a short reason whose first word is the
  category used in the skip summary (``empty file``, ``not an image``, ``truncated``,
  ``corrupt``, ``too large``, ``unreadable``). ``ImageFile.LOAD_TRUNCATED_IMAGES`` is never
  set: a half-written JPEG is reported, not silently padded with grey. libjpeg itself pads a
  JPEG whose data ends early (or whose header claims a larger size than its data holds) with
  grey and only warns, so a JPEG whose bottom eighth decodes to exactly that grey (128) is
  reported as ``truncated`` too. A file without read permission is ``unreadable``.
* EXIF orientation is applied (``ImageOps.exif_transpose``), so a phone photo stored sideways
  comes out the way it was shot.
* Modes: ``1``/``L``/``P``/``CMYK``/``YCbCr``/``LAB``/``HSV`` are converted with Pillow;
  transparency (``RGBA``, ``LA``, ``PA``, palette with a transparent index) is **composited over
  white**. Dropping alpha would expose whatever colour sits under transparent pixels (often
  black or leftovers of editing); white is what the image looks like on a page or a
  product-photo background. 16-bit (``I;16*``) is scaled ``v / 257`` (65535 -> 255), 32-bit
  integer ``I`` is treated as 16-bit data when it lies in ``[0, 65535]`` (Pillow's mode for
  16-bit PNG/TIFF) and min-max scaled otherwise; float ``F`` in ``[0, 1]`` is multiplied by
  255, otherwise min-max scaled. Nothing is clipped.
* Size: with ``size=S`` the shorter side is resized to ``S`` and the centre ``S x S`` square is
  kept (the same as ``ImageOps.fit``). Downscaling uses BICUBIC, which in Pillow is a true
  antialiasing filter (its support grows with the scale factor). JPEGs are first decoded at
  a reduced DCT scale with ``Image.draft`` (1/2 .. 1/8), which makes huge photos cheap.
* Very large images: Pillow refuses images above ``2 * Image.MAX_IMAGE_PIXELS`` (~179 MP) as
  a decompression-bomb guard. A legitimate huge JPEG is still decoded through ``draft`` (its
  decoded size is at most 1/8 per side); anything else above :data:`MAX_FULL_DECODE_PIXELS`
  is skipped as ``too large`` instead of exhausting memory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from deepclust.errors import BadImageError

__all__ = [
    "decode_image",
    "probe_image_size",
    "to_rgb_array",
    "fit_square",
    "reason_category",
    "MAX_FULL_DECODE_PIXELS",
]

#: Images that must be decoded at full resolution (everything except JPEG, which has
#: ``draft``) are skipped above this many pixels: 2**28 px is ~800 MB as RGB.
MAX_FULL_DECODE_PIXELS = 1 << 28
#: Even a JPEG decoded at 1/8 scale must fit in memory; above this it is absurd.
MAX_JPEG_PIXELS = 1 << 34

_JPEG_MAGIC = b"\xff\xd8\xff"


def reason_category(reason: str) -> str:
    """Category of a skip reason: the part before the first colon (``"corrupt: ..."`` -> ``"corrupt"``)."""
    return reason.split(":", 1)[0].strip()


def _open(path: Path) -> Image.Image:
    """Open lazily (header only); map every failure to a :class:`BadImageError`."""
    try:
        n_bytes = path.stat().st_size
    except OSError as e:
        raise BadImageError(f"unreadable: {e.strerror or e}") from None
    if n_bytes == 0:
        raise BadImageError("empty file: 0 bytes")
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and 2x Pillow only warns; we decide below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(path)
    except UnidentifiedImageError:
        raise BadImageError("not an image: unrecognised file format") from None
    except Image.DecompressionBombError:
        return _open_huge(path)
    except PermissionError as e:
        raise BadImageError(f"unreadable: {e.strerror or 'permission denied'}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise BadImageError(_truncated_or_corrupt(str(e))) from None


def _grey_padded(im: Image.Image) -> bool:
    """libjpeg pads a JPEG whose data ends before its declared size with flat grey (128) and
    only warns; a bottom eighth that is exactly that grey is taken as such a truncated file."""
    arr = np.asarray(im)
    bottom = arr[-max(1, arr.shape[0] // 8):]
    return bool(bottom.size) and bool(np.all(np.abs(bottom.astype(np.int16) - 128) <= 1))


def _truncated_or_corrupt(message: str) -> str:
    lowered = message.lower()
    if any(k in lowered for k in ("truncated", "broken data stream", "premature end")):
        return f"truncated: {message}"
    return f"corrupt: {message}"


def _open_huge(path: Path) -> Image.Image:
    """Open an image Pillow's bomb guard refused: only JPEG (decodable at 1/8 scale) is accepted."""
    with open(path, "rb") as f:
        magic = f.read(3)
    if magic != _JPEG_MAGIC:
        raise BadImageError(
            "too large: image exceeds Pillow's decompression-bomb limit "
            f"({2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels) and is not a JPEG that can be decoded at reduced scale"
        )
    try:
        # Calling the plugin class directly skips Image.open's bomb check; the pixel count
        # is checked just below and the decode itself happens at 1/8 scale via draft().
        im = JpegImagePlugin.JpegImageFile(str(path))
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImageError(f"corrupt: {e}") from None
    if im.width * im.height > MAX_JPEG_PIXELS:
        raise BadImageError(f"too large: {im.width}x{im.height} pixels")
    return im


def probe_image_size(path: str | Path) -> tuple[int, int]:
    """``(width, height)`` from the file header, without decoding pixels (raises ``BadImageError``)."""
    with _open(Path(path)) as im:
        w, h = im.size
        try:
            orientation = im.getexif().get(0x0112, 1)
        except Exception:  # broken EXIF never makes an image unusable
            orientation = 1
    # Orientations 5..8 rotate by 90 degrees: the displayed image has width/height swapped.
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _scale_to_uint8(a: np.ndarray, *, sixteen_bit_range: bool) -> np.ndarray:
    """Scale a numeric single-channel array to uint8 without clipping."""
    a = a.astype(np.float64)
    if a.size == 0:
        return a.astype(np.uint8)
    lo, hi = float(a.min()), float(a.max())
    if sixteen_bit_range and lo >= 0 and hi <= 65535:
        out = a / 257.0
    elif lo >= 0 and hi <= 1.0 and not sixteen_bit_range:
        out = a * 255.0
    elif hi > lo:
        out = (a - lo) * (255.0 / (hi - lo))
    else:
        out = np.zeros_like(a)
    return np.rint(out).astype(np.uint8)


def _composite_over_white(im: Image.Image) -> Image.Image:
    rgba = im.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb_array(im: Image.Image) -> Image.Image:
    """Convert a loaded image of any Pillow mode to an ``RGB`` image (see module docstring)."""
    mode = im.mode
    if mode == "RGB":
        return im
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return _composite_over_white(im)
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im)
        if mode == "F":
            gray = _scale_to_uint8(a, sixteen_bit_range=False)
        else:
            gray = _scale_to_uint8(a, sixteen_bit_range=True)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if mode == "1":
        return im.convert("L").convert("RGB")
    # L, P (opaque), CMYK, YCbCr, LAB, HSV: Pillow's own conversions are correct.
    return im.convert("RGB")


def fit_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` and keep the centred ``size x size`` square."""
    w, h = im.size
    if (w, h) == (size, size):
        return im
    side = min(w, h)
    left = (w - side) / 2.0
    top = (h - side) / 2.0
    box = (left, top, left + side, top + side)
    # reducing_gap: for big downscales Pillow first box-reduces by an integer factor,
    # keeping the result visually identical at a fraction of the cost.
    return im.resize((size, size), Image.Resampling.BICUBIC, box=box, reducing_gap=3.0)


def _fit_max_side(im: Image.Image, max_side: int) -> Image.Image:
    w, h = im.size
    if max(w, h) <= max_side:
        return im
    scale = max_side / max(w, h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return im.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)


def decode_image(path: str | Path, size: int | None = None, *, max_side: int | None = None) -> np.ndarray:
    """Decode ``path`` to ``uint8 (H, W, 3)`` RGB, or raise ``BadImageError(reason)``.

    Args:
        path: image file (any format Pillow reads; the first frame of animations).
        size: if given, the result is the centred square ``(size, size, 3)`` after resizing
            the shorter side to ``size``.
        max_side: if given (and ``size`` is not), downscale keeping the aspect ratio so the
            longer side is at most ``max_side`` (thumbnails for reports).
    """
    path = Path(path)
    im = _open(path)
    try:
        w, h = im.size
        target = size if size is not None else max_side
        if im.format == "JPEG" and target is not None:
            # Decode at the smallest DCT scale that still covers the target on both sides.
            need = (target, target) if size is not None else _draft_request(w, h, target)
            im.draft("RGB", need)
        elif w * h > MAX_FULL_DECODE_PIXELS:
            raise BadImageError(f"too large: {w}x{h} pixels (limit {MAX_FULL_DECODE_PIXELS} for non-JPEG)")
        try:
            im.load()
        except OSError as e:
            raise BadImageError(_truncated_or_corrupt(str(e))) from None
        except (SyntaxError, ValueError, EOFError, IndexError, TypeError) as e:
            raise BadImageError(f"corrupt: {e}") from None
        except MemoryError:
            raise BadImageError(f"too large: out of memory decoding {w}x{h} pixels") from None
        if im.format == "JPEG" and _grey_padded(im):
            raise BadImageError(f"truncated: the JPEG holds less data than its declared {w}x{h} pixels "
                                "(the decoder would fill the rest with grey)")
        try:
            oriented = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block never makes an otherwise good image unusable
            oriented = im
        rgb = to_rgb_array(oriented if oriented is not None else im)
        if size is not None:
            rgb = fit_square(rgb, size)
        elif max_side is not None:
            rgb = _fit_max_side(rgb, max_side)
        out = np.asarray(rgb, dtype=np.uint8)
    finally:
        im.close()
    if out.ndim != 3 or out.shape[2] != 3:  # defensive: every branch above yields RGB
        raise BadImageError(f"corrupt: unexpected decoded shape {out.shape}")
    return out


def _draft_request(w: int, h: int, max_side: int) -> tuple[int, int]:
    scale = max_side / max(w, h)
    return (max(1, int(w * scale)), max(1, int(h * scale)))

