"""A file name that is not valid UTF-8 through `zeroshot` and `attention` (tiny offline
CLIP / DINOv2 models): the commands finish and the CSV keeps the name byte for byte."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from deepclust.cli import main
from pretrained_fixtures import colour_images_dir, tiny_clip_dir, tiny_dinov2_dir  # noqa: F401 (fixtures)

BAD = os.fsdecode(b"bad\xff\xfename.png")


def _with_bad_name(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    first_class = sorted(p for p in dst.iterdir() if p.is_dir())[0]
    shutil.copy(sorted(first_class.iterdir())[0], first_class / BAD)
    return dst


def test_zeroshot_and_attention_finish_with_a_non_utf8_file_name(tmp_path, colour_images_dir, tiny_clip_dir,
                                                                  tiny_dinov2_dir):
    src = _with_bad_name(colour_images_dir, tmp_path / "src")
    assert main(["zeroshot", str(src), "--model", f"hf:{tiny_clip_dir}", "--classes", "red,green,blue",
                 "--out", str(tmp_path / "zs"), "--quiet"]) == 0
    with open(tmp_path / "zs" / "predictions.csv", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        assert BAD in {Path(r["path"]).name for r in csv.DictReader(fh)}
    assert main(["attention", str(src), "--model", f"hf:{tiny_dinov2_dir}", "--out", str(tmp_path / "attn"),
                 "--limit", "30", "--quiet"]) == 0
    assert (tmp_path / "attn" / "index.html").is_file()
