"""``deepclust demo`` run for real on the built-in digits.

The full demo (1797 digits) spends most of its ~45 s drawing the report's t-SNE map, so the
test runs the same command on a fixed random subset with the documented ``--n-images``.
"""

from __future__ import annotations

import csv
import json

import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from deepclust.cli import main

N_IMAGES = 400


def test_demo_prints_both_methods_side_by_side_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-images", str(N_IMAGES), "--quiet"]) == 0
    printed = capsys.readouterr().out

    report = out / "pca" / "report.html"
    assert report.is_file() and f"report: {report}" in printed
    assert f"{N_IMAGES} images" in printed
    for name in ("pca", "raw"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["n_images"] == N_IMAGES and metrics["k"] == 10 and metrics["features"] == name
        with open(out / name / "assignments.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len({r["path"] for r in rows}) == N_IMAGES
        y_true = [r["label"] for r in rows]
        y_pred = [r["cluster"] for r in rows]
        assert set(y_true) == {str(d) for d in range(10)}
        assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-6)
        assert metrics["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-6)
        # The printed table shows the numbers of metrics.json.
        assert f"{metrics['acc']:.3f}  {metrics['nmi']:.3f}  {metrics['ari']:.3f}" in printed
        # k-means on digits is far above chance (ACC 0.1) with either kind of feature.
        assert metrics["acc"] > 0.6 and metrics["nmi"] > 0.6
    # Both runs clustered the very same subset.
    paths = [sorted(r["path"] for r in csv.DictReader(open(out / name / "assignments.csv"))) for name in ("pca", "raw")]
    assert paths[0] == paths[1]
    assert not (out / "raw" / "report.html").exists()  # only the main run gets a report


def test_demo_rejects_an_impossible_subset(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--n-images", "0", "--quiet"]) == 2
    assert "n_images must be between 1 and 1797" in capsys.readouterr().err
