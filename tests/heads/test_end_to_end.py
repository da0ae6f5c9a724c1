"""Heads, --k auto and HDBSCAN through the real entry points: the CLI on a tiny random DINOv2
(the real Hugging Face loading path), the pipeline's writer (noise in every output file) and
DeepClusterer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from deepclust.cli import main
from pretrained_fixtures import colour_images_dir, tiny_dinov2_dir  # noqa: F401  (pytest fixtures)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("head", ["scan", "temi"])
def test_tiny_dinov2_through_the_cli_with_a_head(head, tiny_dinov2_dir, colour_images_dir, tmp_path, capsys):  # noqa: F811
    torch.set_num_threads(1)
    out = tmp_path / head
    rc = main(["cluster", str(colour_images_dir), "--model", str(tiny_dinov2_dir), "--k", "3", "--head", head,
               "--self-label", "--entropy-weight", "2", "--head-epochs", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    info = json.loads((out / "metrics.json").read_text())
    assert info["clusterer"] == "kmeans" and info["k"] == 3
    assert info["cluster_head"]["kind"] == head and info["cluster_head"]["config"]["entropy_weight"] == 2.0
    assert info["cluster_head"]["self_label"] is True and info["cluster_head"]["neighbour_purity"] is not None
    rows = _rows(out / "assignments.csv")
    assert len(rows) == info["n_images"] and {int(r["cluster"]) for r in rows} <= {0, 1, 2}
    assert sum(info["cluster_sizes"]) == info["n_images"]
    assert "head loss" in (out / "report.html").read_text()
    assert "head" in capsys.readouterr().out


def test_k_auto_on_digits_writes_the_curve_and_the_report_shows_it(tmp_path, capsys):
    out = tmp_path / "auto"
    assert main(["cluster", "digits", "--k", "auto", "--k-range", "8:11", "--reduce", "pca", "--n-init", "2",
                 "--out", str(out), "--quiet"]) == 0
    info = json.loads((out / "metrics.json").read_text())
    choice = info["k_choice"]
    assert choice["criterion"] == "silhouette" and set(choice["curve"]) == {"8", "9", "10", "11"}
    assert info["k"] == choice["k"] == int(max(choice["curve"], key=choice["curve"].get))
    assert info["reduce"] == {"method": "pca", "n_components": 50}
    html = (out / "report.html").read_text()
    assert "k chosen" in html and "silhouette" in html
    assert f"k={choice['k']}" in capsys.readouterr().out


def test_hdbscan_noise_is_handled_in_every_output_file(tmp_path):
    from types import SimpleNamespace

    from deepclust.pipeline import cluster_store

    rng = np.random.default_rng(0)  # three tight grey levels and three odd images
    groups = [np.full((12, 8, 8, 3), v, np.uint8) + rng.integers(0, 3, (12, 8, 8, 3), dtype=np.uint8)
              for v in (20, 120, 220)]
    odd = np.zeros((3, 8, 8, 3), np.uint8)
    odd[0, ..., 0] = odd[1, ..., 1] = odd[2, ..., 2] = 255  # pure red, green, blue: far from all
    store = SimpleNamespace(images=np.concatenate(groups + [odd]),
                            labels=np.array([0] * 12 + [1] * 12 + [2] * 12 + [-1] * 3),
                            class_names=["dark", "mid", "light"], paths=[f"img{i}.png" for i in range(39)],
                            skipped=[], source_id=None)

    result = cluster_store(store, k=None, clusterer="hdbscan", min_cluster_size=5, out_dir=tmp_path, progress=False)
    labels = result.labels
    assert (labels[-3:] == -1).all() and set(labels[:36]) == {0, 1, 2}
    rows = _rows(tmp_path / "assignments.csv")
    assert [int(r["cluster"]) for r in rows] == labels.tolist()
    info = json.loads((tmp_path / "metrics.json").read_text())
    assert info["clusterer"] == "hdbscan" and info["k"] == 3 and info["n_noise"] == 3
    assert info["cluster_sizes"] == [12, 12, 12] and info["noise_fraction"] == pytest.approx(3 / 39)
    assert info["non_noise"]["acc"] == 1.0 and info["non_noise"]["n_evaluated"] == 36
    assert info["acc"] == 1.0  # the 3 noise images have unknown labels: ACC over the 36 labelled ones
    summary = (tmp_path / "summary.txt").read_text()
    assert "noise" in summary and "cluster  -1" not in summary
    report = (tmp_path / "report.html").read_text()
    assert "<h2>Noise (in no cluster)" in report and "<h2>Cluster -1" not in report


def test_deepclusterer_takes_the_same_options():
    from sklearn.datasets import load_digits

    from deepclust.estimator import DeepClusterer

    torch.set_num_threads(1)
    x = load_digits().images[:300] / 16.0
    est = DeepClusterer(model="raw", k="auto", k_range="8:10", reduce="pca", n_init=2).fit(x)
    assert est.clustering_.k_choice is not None and est.clustering_.k in (8, 9, 10)
    scan = DeepClusterer(model="raw", k=10, head="scan", entropy_weight=2.0, head_epochs=3).fit(x)
    assert scan.clustering_.head is not None and scan.metrics_["cluster_head"]["config"]["entropy_weight"] == 2.0
    assert (scan.predict(x) == scan.labels_).all()
    assert "head" in DeepClusterer().get_params() and DeepClusterer().get_params()["clusterer"] == "kmeans"
