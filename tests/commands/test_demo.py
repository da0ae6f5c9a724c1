"""``deepclust demo`` run for real on the built-in digits: train, cluster, compare.

The full demo (DeepCluster on all 1797 digits, about 25 s of training on one core) is run
as a user would run it, and its trained clusters must beat raw-pixel k-means; the other
checks use a fixed random subset via the documented ``--n-images`` to stay fast.
"""

from __future__ import annotations

import csv
import json

import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from deepclust.cli import main

N_DIGITS = 1797


def test_demo_trains_then_prints_all_runs_side_by_side_and_writes_the_report(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out

    report = out / "trained" / "report.html"
    assert report.is_file() and f"report: {report}" in printed
    assert f"{N_DIGITS} images" in printed
    # The trained run: a checkpoint in out/model whose features were clustered.
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "state.json").is_file()
    assert json.loads((out / "trained" / "metrics.json").read_text())["features"] == str(out / "model")
    assert "digits_deepcluster (trained)" in printed and "training digits_deepcluster: " in printed
    for name in ("trained", "pca", "raw"):
        metrics = json.loads((out / name / "metrics.json").read_text())
        assert metrics["n_images"] == N_DIGITS and metrics["k"] == 10
        with open(out / name / "assignments.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        assert len({r["path"] for r in rows}) == N_DIGITS
        y_true = [r["label"] for r in rows]
        y_pred = [r["cluster"] for r in rows]
        assert set(y_true) == {str(d) for d in range(10)}
        assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-6)
        assert metrics["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-6)
        # The printed table shows the numbers of metrics.json.
        assert f"{metrics['acc']:.3f}  {metrics['nmi']:.3f}  {metrics['ari']:.3f}" in printed
        # k-means on digits is far above chance (ACC 0.1) with either kind of feature.
        assert metrics["acc"] > 0.6 and metrics["nmi"] > 0.6
    # All runs clustered the very same subset.
    paths = [sorted(r["path"] for r in csv.DictReader(open(out / name / "assignments.csv")))
             for name in ("trained", "pca", "raw")]
    assert paths[0] == paths[1] == paths[2]
    # only the main run gets a report
    assert not (out / "raw" / "report.html").exists() and not (out / "pca" / "report.html").exists()

    # What the demo is for: the briefly trained method clusters better than raw pixels
    # (measured: ACC 0.94 vs 0.79, see BENCHMARKS.md).
    acc = {name: json.loads((out / name / "metrics.json").read_text())["acc"] for name in ("trained", "raw")}
    assert acc["trained"] > acc["raw"] + 0.05

    # Running the demo again into the same folder replaces its earlier training run.
    assert main(["demo", "--out", str(out), "--n-images", "300", "--quiet"]) == 0
    assert json.loads((out / "trained" / "metrics.json").read_text())["n_images"] == 300


def test_demo_without_training_reports_the_pca_run(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--n-images", "200", "--no-train", "--quiet"]) == 0
    assert f"report: {out / 'pca' / 'report.html'}" in capsys.readouterr().out
    assert not (out / "model").exists()


def test_demo_rejects_an_impossible_subset(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--n-images", "0", "--quiet"]) == 2
    assert "n_images must be between 1 and 1797" in capsys.readouterr().err
