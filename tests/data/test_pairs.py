"""Image-caption pairs: CSV / JSONL tables, sidecar captions, class folders through templates;
bad rows skipped and listed, unusable sources a clear DataError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepclust.data.pairs import CAPTION_TEMPLATES, load_pairs
from deepclust.errors import DataError


def _png(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def image_dir(tmp_path) -> Path:
    for i in range(4):
        _png(tmp_path / "imgs" / f"im{i}.png", 40 * i)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "imgs"


def test_csv_groups_several_captions_per_image_and_lists_every_bad_row(tmp_path, image_dir):
    table = tmp_path / "pairs.csv"
    table.write_text("path,caption,source\n"
                     "imgs/im0.png,a dark square,x\n"
                     "imgs/im0.png,  a   very dark square ,x\n"   # second caption of im0, spaces collapsed
                     "imgs/im1.png,a grey square,x\n"
                     "imgs/im2.png,,x\n"                           # empty caption
                     "imgs/missing.png,a ghost,x\n"                # no such file
                     "imgs/broken.png,a broken file,x\n"           # does not decode
                     ",no path,x\n"
                     f"{image_dir / 'im3.png'},an absolute path,x\n")
    store = load_pairs(table, progress=False)
    assert len(store) == 3 and store.kind == "csv"
    by_name = {Path(p).name: store.captions_of(i) for i, p in enumerate(store.paths)}
    assert by_name == {"im0.png": ["a dark square", "a very dark square"], "im1.png": ["a grey square"],
                       "im3.png": ["an absolute path"]}
    assert sum("empty caption" in r for _, r in store.skipped) == 1
    assert sum("no image path" in r for _, r in store.skipped) == 1
    assert any("missing image file" in r and "missing.png" in p for p, r in store.skipped)
    assert any("broken.png" in p for p, _ in store.skipped)
    assert np.array_equal(store.pair_labels, np.arange(3))      # one UniCL label per image
    assert store.images.shape == (3, 8, 8, 3)


def test_jsonl_accepts_caption_lists_and_skips_lines_that_are_not_objects(tmp_path, image_dir):
    table = tmp_path / "pairs.jsonl"
    table.write_text("\n".join([json.dumps({"path": "imgs/im1.png", "caption": ["one", "two"]}),
                                "[1, 2]", "{not json",
                                json.dumps({"path": "imgs/im2.png", "caption": "three"})]) + "\n")
    store = load_pairs(table, progress=False)
    assert sorted(store.captions_of(i)[0] for i in range(len(store))) == ["one", "three"]
    assert store.n_captions == 3
    assert sum(r == "not a JSON object" for _, r in store.skipped) == 2


def test_sidecar_captions_one_per_line_and_images_without_one_are_skipped(image_dir):
    (image_dir / "im0.txt").write_text("first caption\n\nsecond caption\n")
    (image_dir / "im1.txt").write_text("   \n")
    (image_dir / "im2.txt").write_text("only one\n")
    store = load_pairs(image_dir, progress=False)
    assert store.kind == "sidecar" and len(store) == 2
    assert [store.captions_of(i) for i in range(2)] == [["first caption", "second caption"], ["only one"]]
    reasons = {Path(p).name: r for p, r in store.skipped}
    assert "empty caption" in reasons["im1.png"] and "no caption" in reasons["im3.png"]
    assert "broken.png" in reasons and not any(name.endswith(".txt") for name in reasons)


def test_class_folders_become_templated_captions_with_the_class_as_label(tiny_image_folder):
    store = load_pairs(tiny_image_folder, progress=False)
    assert store.kind == "templates" and len(store) == 24
    assert len(store.texts) == 3 * len(CAPTION_TEMPLATES)
    assert np.array_equal(store.pair_labels, store.labels)
    first = store.captions_of(0)
    assert first == [t.format(store.class_names[store.labels[0]]) for t in CAPTION_TEMPLATES]
    custom = load_pairs(tiny_image_folder, templates=["itap of a {}."], progress=False)
    assert custom.captions_of(0) == [f"itap of a {custom.class_names[custom.labels[0]]}."]
    with pytest.raises(DataError, match="has no '{}'"):
        load_pairs(tiny_image_folder, templates=["no slot"], progress=False)


def test_unusable_sources_are_clear_data_errors(tmp_path, image_dir):
    no_header = tmp_path / "bad.csv"
    no_header.write_text("imgs/im0.png,a caption\n")
    with pytest.raises(DataError, match="'path' and 'caption'"):
        load_pairs(no_header, progress=False)
    all_bad = tmp_path / "allbad.csv"
    all_bad.write_text("path,caption\nimgs/nope.png,x\nimgs/im0.png,\n")
    with pytest.raises(DataError, match="no usable image-caption pair"):
        load_pairs(all_bad, progress=False)
    plain = tmp_path / "plain"
    _png(plain / "a.png", 3)
    with pytest.raises(DataError, match="has no captions"):
        load_pairs(plain, progress=False)
    with pytest.raises(DataError, match=r"\.csv/\.tsv"):
        load_pairs(_png(tmp_path / "x.png", 1), progress=False)
