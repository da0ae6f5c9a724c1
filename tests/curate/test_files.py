"""The files of a curation round-trip any file name; the report page shows every group."""

from __future__ import annotations

import csv
import html
import json
import re

import numpy as np

from curate_fixtures import make_variant, smooth_image
from deepclust.curate import curate

ODD = ["a,b.png", 'q"uote.png', "new\nline.png", "<img onerror=alert(1)>.png"]


def _read(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_every_output_round_trips_odd_file_names(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "src"
    root.mkdir()
    for i in range(10):
        smooth_image(rng).save(root / f"plain{i}.png")
    smooth_image(rng).save(root / ODD[0])
    make_variant(root / ODD[0], "copy", root / ODD[1])                     # exact group of two odd names
    make_variant(root / "plain0.png", "resize", root / ODD[2])              # near duplicate, odd name
    make_variant(root / "plain1.png", "resize", root / ODD[3])
    out = tmp_path / "out"
    result = curate(root, out_dir=out, target_size=6, clusters=[4, 2], progress=False)
    names = {str(root / n) for n in ODD}
    assert names <= set(result.paths)

    keep = _read(out / "keep.csv")
    removed = _read(out / "removed.csv")
    dups = _read(out / "duplicates.csv")
    assert keep[0] == ["path"] and removed[0] == ["path", "kind", "reason", "other", "similarity"]
    assert dups[0] == ["group", "path", "kind", "similarity"]
    assert [r[0] for r in keep[1:]] == result.kept_paths
    assert {r[0] for r in removed[1:]} == {result.paths[i] for i in result.removed}
    assert {r[0] for r in keep[1:]} | {r[0] for r in removed[1:]} == set(result.paths)  # each image once
    assert len(keep) - 1 == 6
    by_path = {r[0]: r for r in removed[1:]}
    exact_row = by_path[str(root / ODD[1])]  # q"uote sorts after a,b: a,b is kept
    assert exact_row[1:4] == ["exact", f"exact duplicate of {root / ODD[0]}", str(root / ODD[0])]
    assert {r[1] for r in removed[1:]} >= {"exact", "near", "not_sampled"}
    members = {(r[1], r[2]) for r in dups[1:]}
    assert {(str(root / ODD[0]), "exact"), (str(root / ODD[1]), "exact"), (str(root / ODD[2]), "near")} <= members

    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_kept"] == 6 and summary["n_images"] == 14
    assert summary["removed"]["exact"] == 1 and summary["clusters_per_level"] == [4, 2]
    assert summary["index"]["near_duplicates"].startswith("IndexFlatIP (exact")

    page = (out / "curation.html").read_text(encoding="utf-8")
    assert "<img onerror" not in page and html.escape("<img onerror=alert(1)>.png") in page
    groups = re.findall(r'<section class="group" data-kind="(\w+)" data-size="(\d+)"', page)
    assert sorted(groups) == sorted((g.kind, str(len(g.members))) for g in result.groups)
    before = [int(b) for b in re.findall(r'data-before="(\d+)"', page)]
    after = [int(a) for a in re.findall(r'data-after="(\d+)"', page)]
    assert sum(before) == 14 - summary["removed"]["exact"] - summary["removed"]["near"] and sum(after) == 6
    assert result.balance is not None
    assert sorted(before) == sorted(result.balance["before"]) and sorted(after) == sorted(result.balance["after"])


def test_report_page_caps_thumbnails_per_group_and_counts_the_rest(tmp_path):
    from deepclust.report.curation import write_curation_report

    images = np.zeros((30, 8, 8, 3), dtype=np.uint8)
    paths = [f"img{i}.png" for i in range(30)]
    page = write_curation_report(tmp_path, images=images, paths=paths, summary={"n_images": 30},
                                 groups=[("exact", list(range(30)), [1.0] * 30), ("near", [0, 1], [1.0, 0.97])],
                                 max_members=24).read_text(encoding="utf-8")
    assert page.count("<figure") == 24 + 2 and "and 6 more (duplicates.csv)" in page
    assert "cos 0.970" in page and 'id="balance"' not in page  # no sampling: no balance section
