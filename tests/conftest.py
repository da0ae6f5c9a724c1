"""Shared fixtures.

* Every test gets its own ``$DEEPCLUST_CACHE`` under ``tmp_path`` (autouse), so no test ever
  writes to ``~/.cache`` or sees another test's stores.
* ``one_thread``: torch on one thread for the test (restored after). Modules that train tiny
  models use it for all their tests (``pytestmark = pytest.mark.usefixtures("one_thread")``):
  on a busy 2-core machine thread hand-offs cost more than the maths.
* ``tiny_image_folder``: 3 classes x 8 PNGs of 16x16 that any clustering separates easily.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

TINY_CLASSES = ("circles", "squares", "stripes")
TINY_PER_CLASS = 8
TINY_SIDE = 16


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def one_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_image(cls: int, i: int, rng: np.random.Generator) -> np.ndarray:
    """Class 0: red disc on black; 1: green square on white; 2: blue/yellow vertical stripes."""
    s = TINY_SIDE
    yy, xx = np.mgrid[0:s, 0:s]
    img = np.zeros((s, s, 3), dtype=np.float32)
    shift = (i % 3) - 1  # small per-image variation of position
    if cls == 0:
        disc = (yy - s / 2 - shift) ** 2 + (xx - s / 2 + shift) ** 2 <= (s / 3) ** 2
        img[disc] = (230, 30, 30)
    elif cls == 1:
        img[:] = 255
        lo, hi = 4 + shift, 12 + shift
        img[lo:hi, lo:hi] = (30, 200, 30)
    else:
        stripes = ((xx + shift) // 2) % 2 == 0
        img[stripes] = (30, 30, 220)
        img[~stripes] = (240, 220, 40)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


def make_tiny_image_folder(root: Path, seed: int = 0) -> Path:
    """Write ``root/<class>/<class>_<i>.png`` for the classes in ``TINY_CLASSES``; returns ``root``."""
    rng = np.random.default_rng(seed)
    for c, name in enumerate(TINY_CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(TINY_PER_CLASS):
            Image.fromarray(_tiny_image(c, i, rng)).save(root / name / f"{name}_{i}.png")
    return root


@pytest.fixture
def tiny_image_folder(tmp_path) -> Path:
    """A folder with 3 class sub-folders (``circles``, ``squares``, ``stripes``) of 8 16x16 PNGs each.

    ``load_images(folder)`` gives 24 images, labels 0/1/2 in sorted class-name order.
    """
    return make_tiny_image_folder(tmp_path / "tiny_images")
