"""Helpers of the curation tests: a folder with known duplicates of each kind.

The distinct images are smooth random colour fields (4x4 noise upscaled bicubically to
32x32), so they behave like natural photographs under a small crop or a resize (nearby
pixels are alike), and any two of them are far apart in raw pixel space.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

SIDE = 32
N_DISTINCT = 12
#: duplicate kind -> the original it copies (index into the distinct images)
KINDS = {"copy": 0, "bmp": 1, "jpeg": 2, "resize": 3, "crop": 4, "flip": 5, "jitter_mild": 6, "jitter_strong": 7}


def smooth_image(rng: np.random.Generator, side: int = SIDE) -> Image.Image:
    small = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((side, side), Image.BICUBIC)


def make_variant(original: Path, kind: str, target: Path) -> Path:
    """Write ``kind`` of ``original`` to ``target`` (suffix chosen by the kind); returns the path."""
    img = Image.open(original).convert("RGB")
    w, h = img.size
    if kind == "copy":
        shutil.copyfile(original, target)
        return target
    if kind == "bmp":  # other bytes, same pixels
        target = target.with_suffix(".bmp")
        img.save(target)
        return target
    if kind == "jpeg":
        target = target.with_suffix(".jpg")
        img.save(target, quality=75)
        return target
    img = {"resize": lambda m: m.resize((w * 3 // 2, h * 3 // 2), Image.BICUBIC),
           "crop": lambda m: m.crop((2, 2, w - 2, h - 2)),
           "flip": ImageOps.mirror,
           "jitter_mild": lambda m: ImageEnhance.Brightness(m).enhance(1.1),
           "jitter_strong": lambda m: ImageEnhance.Color(ImageEnhance.Brightness(m).enhance(1.3)).enhance(1.5),
           }[kind](img)
    img.save(target)
    return target


def make_duplicates_folder(root: Path, seed: int = 0) -> tuple[list[Path], dict[str, Path]]:
    """``root/orig_XX.png`` distinct images and ``root/dup_<kind>.*`` copies; (originals, kind -> copy)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    originals = []
    for i in range(N_DISTINCT):
        path = root / f"orig_{i:02d}.png"
        smooth_image(rng).save(path)
        originals.append(path)
    copies = {kind: make_variant(originals[i], kind, root / f"dup_{kind}.png") for kind, i in KINDS.items()}
    return originals, copies
