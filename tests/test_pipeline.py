"""Acceptance: one short training run gives the same clustering from every entry point.

``deepclust train`` (which clusters its own store into the run directory), ``deepclust cluster
--model RUN``, ``DeepClusterer(model=RUN)`` and a ``DeepClusterer`` trained with the same
recipe and seed give identical labels, identical metrics and identical ``metrics.json`` keys.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
import yaml

from deepclust.cli import main
from deepclust.errors import DeepclustError
from deepclust.estimator import DeepClusterer

torch.set_num_threads(1)

# A tiny DINO (out_dim == k: it has a cluster head) on the 24 16-px images of the tiny folder.
RECIPE = {
    "method": "dino", "backbone": "small_cnn", "backbone_kwargs": {"widths": [8, 16], "convs_per_stage": 1},
    "image_size": 16, "k": 3, "cluster_whiten_dim": 4, "epochs": 2, "batch_size": 8, "lr": 0.01,
    "warmup_epochs": 0, "knn_every": 0, "monitor_samples": 24, "collapse_check": False, "num_workers": 0,
    "torch_threads": 1, "device": "cpu", "seed": 3, "knn_k": 5,
    "method_kwargs": {"out_dim": 3, "hidden_dim": 16, "bottleneck_dim": 8,
                      "augment": {"n_local": 0, "global_scale": [0.6, 1.0], "flip": False, "color_jitter": None,
                                  "grayscale_p": 0.0, "blur_p": 0.0, "solarize_p": 0.0, "mean": "half"}},
}
TIMINGS = ("seconds", "seconds_features", "seconds_kmeans")


def _labels_by_path(path) -> dict[str, int]:
    with open(path, newline="", encoding="utf-8") as fh:
        return {row["path"]: int(row["cluster"]) for row in csv.DictReader(fh)}


def _numbers(metrics: dict, drop=()) -> dict:
    return {key: value for key, value in metrics.items() if key not in TIMINGS and key not in drop}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`deepclust train` on the tiny folder, then `deepclust cluster --model RUN` on it."""
    from conftest import make_tiny_image_folder

    root = tmp_path_factory.mktemp("pipeline")
    folder = make_tiny_image_folder(root / "images")
    recipe = root / "tiny_dino.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    run = root / "run"
    assert main(["train", "--config", str(recipe), "--data", str(folder), "--out", str(run), "--no-progress"]) == 0
    clustered = root / "clustered"
    assert main(["cluster", str(folder), "--model", str(run), "--k", "3", "--seed", "3", "--out", str(clustered),
                 "--quiet"]) == 0
    return folder, recipe, run, clustered


def test_train_and_cluster_model_run_give_the_same_clustering(trained):
    _, _, run, clustered = trained
    for name in ("assignments.csv", "metrics.json", "skipped.csv", "summary.txt", "report.html"):
        assert (run / name).is_file() and (clustered / name).is_file(), name
    assert _labels_by_path(run / "assignments.csv") == _labels_by_path(clustered / "assignments.csv")
    from_train = json.loads((run / "metrics.json").read_text())
    from_cluster = json.loads((clustered / "metrics.json").read_text())
    assert list(from_train) == list(from_cluster)  # same keys, same order
    assert _numbers(from_train) == _numbers(from_cluster)
    # What the run's metrics hold: labels known (3 class folders), a k-way head, the recipe's whitening.
    assert {"acc", "nmi", "ari", "knn_acc", "head_acc", "head_nmi", "n_clusters_used"} <= set(from_train)
    assert from_train["whiten_dim"] == 4 and from_train["spherical"] and from_train["k"] == 3
    assert from_train["method"] == "dino" and sum(from_train["cluster_sizes"]) == 24
    # Both reports carry the training curves of the run's log.csv.
    assert 'id="plot-training"' in (run / "report.html").read_text()
    assert 'id="plot-training"' in (clustered / "report.html").read_text()


def test_estimator_with_the_run_gives_the_same_clustering(trained):
    folder, _, run, clustered = trained
    model = DeepClusterer(model=str(run), k=3, random_state=3, device="cpu", verbose=False).fit(str(folder))
    expected = _labels_by_path(clustered / "assignments.csv")
    assert dict(zip(_paths(folder), model.labels_.tolist())) == expected
    from_cluster = json.loads((clustered / "metrics.json").read_text())
    assert list(model.metrics_) == list(from_cluster)
    assert _numbers(model.metrics_) == _numbers(from_cluster)
    np.testing.assert_array_equal(model.predict(str(folder)), model.labels_)


def test_estimator_trained_with_the_same_recipe_and_seed_gives_the_same_clustering(trained, tmp_path):
    folder, recipe, run, _ = trained
    model = DeepClusterer(method="dino", k=3, config=str(recipe), device="cpu", random_state=3, verbose=False,
                          out_dir=tmp_path / "est").fit(str(folder))
    assert dict(zip(_paths(folder), model.labels_.tolist())) == _labels_by_path(run / "assignments.csv")
    from_train = json.loads((run / "metrics.json").read_text())
    assert list(model.metrics_) == list(from_train)
    assert _numbers(model.metrics_, drop=("features",)) == _numbers(from_train, drop=("features",))
    assert json.loads((tmp_path / "est" / "metrics.json").read_text())["features"] == str(tmp_path / "est")


def test_a_runs_cluster_head_is_its_default_clustering_everywhere(trained, tmp_path):
    """``train --head scan`` keeps ``cluster_head: scan`` in config.json: its own final clustering and
    ``cluster --model RUN`` (and the estimator) train the SCAN head, ``--head none`` is k-means again."""
    folder, recipe, _, _ = trained
    run = tmp_path / "run_scan"
    assert main(["train", "--config", str(recipe), "--data", str(folder), "--out", str(run), "--head", "scan",
                 "--set", "cluster_head_kwargs.n_heads=3", "--quiet", "--no-report"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["cluster_head"] == "scan" and saved["cluster_head_kwargs"] == {"n_heads": 3}
    from_train = json.loads((run / "metrics.json").read_text())
    assert from_train["cluster_head"]["kind"] == "scan" and len(from_train["cluster_head"]["head_losses"]) == 3
    again, plain = tmp_path / "again", tmp_path / "plain"
    assert main(["cluster", str(folder), "--model", str(run), "--k", "3", "--seed", "3", "--out", str(again),
                 "--quiet", "--no-report"]) == 0
    assert _labels_by_path(again / "assignments.csv") == _labels_by_path(run / "assignments.csv")
    from_cluster = json.loads((again / "metrics.json").read_text())
    for metrics in (from_cluster, from_train):
        metrics["cluster_head"].pop("seconds")   # the head's stage timings
    assert _numbers(from_cluster) == _numbers(from_train)
    model = DeepClusterer(model=str(run), k=3, random_state=3, device="cpu", verbose=False).fit(str(folder))
    assert model.metrics_["cluster_head"]["head_losses"] == from_train["cluster_head"]["head_losses"]
    assert main(["cluster", str(folder), "--model", str(run), "--k", "3", "--seed", "3", "--out", str(plain),
                 "--quiet", "--no-report", "--head", "none"]) == 0
    assert "cluster_head" not in json.loads((plain / "metrics.json").read_text())
    more = tmp_path / "more"   # options given with the call win over the run's
    assert main(["cluster", str(folder), "--model", str(run), "--k", "3", "--out", str(more), "--quiet",
                 "--no-report", "--head", "scan", "--heads", "4"]) == 0
    assert len(json.loads((more / "metrics.json").read_text())["cluster_head"]["head_losses"]) == 4


def test_default_head_follows_the_run_unless_the_clustering_excludes_it():
    from deepclust.features import LoadedModel
    from deepclust.pipeline import default_head, run_head_options
    from deepclust.train.config import TrainConfig

    run = LoadedModel("run", "run", encoder=None, config=TrainConfig(cluster_head="scan"))  # type: ignore[arg-type]
    pixels = LoadedModel("raw", "raw", encoder=None)  # type: ignore[arg-type]
    assert default_head("auto", run, 10) == "scan"
    assert default_head("auto", pixels, 10) is None and default_head("temi", pixels, 10) == "temi"
    assert default_head("none", run, 10) is None and default_head(None, run, 10) is None
    # k chosen by the silhouette, HDBSCAN and balanced k-means assign labels their own way
    assert default_head("auto", run, "auto") is None
    assert default_head("auto", run, None, clusterer="hdbscan") is None
    assert default_head("auto", run, 10, balanced=True) is None
    with pytest.raises(DeepclustError, match="cluster_head"):
        TrainConfig(cluster_head="kmeans")
    with pytest.raises(DeepclustError, match="unknown head option.*n_head\\b"):
        TrainConfig(cluster_head="scan", cluster_head_kwargs={"n_head": 5})
    # the run's head options go with the run's head kind only
    run_opts = LoadedModel("run", "run", encoder=None,  # type: ignore[arg-type]
                           config=TrainConfig(cluster_head="scan", cluster_head_kwargs={"n_heads": 50}))
    assert run_head_options("scan", run_opts) == {"n_heads": 50}
    assert run_head_options("temi", run_opts) == {} and run_head_options(None, run_opts) == {}
    assert run_head_options("scan", pixels) == {}


def _paths(folder) -> list[str]:
    from deepclust.data.store import load_images

    return list(load_images(str(folder), size=16, progress=False).paths)
