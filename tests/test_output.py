"""The one writer (`write_clustering`) and the one metrics function (`clustering_metrics_info`)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from deepclust.cluster import cluster_embeddings
from deepclust.data.store import ImageStore
from deepclust.output import clustering_metrics_info, evaluate_clustering, write_clustering

ODD_NAMES = ["plain.png", "with,comma.png", 'quote"d.png', "new\nline.png", "ünïcödé, \"both\".jpg", "tab\t.png"]


def _store(labels=(0, 0, 1, 1, -1, 1)) -> ImageStore:
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    return ImageStore(images=images, paths=list(ODD_NAMES), labels=None if labels is None else np.array(labels),
                      class_names=["cat", "dog"], skipped=[("bad,file.jpg", 'not an "image"')], source_id=None)


def test_every_file_name_round_trips_and_metrics_json_comes_last(tmp_path):
    store = _store()
    x = np.array([[0, 0], [0, 1], [9, 9], [9, 8], [5, 5], [9, 10]], np.float32)
    clustering = cluster_embeddings(x, 2, spherical=False, n_init=2)
    info = clustering_metrics_info(store, clustering, features=x, spec="raw", seed=0, n_init=2)
    (tmp_path / "metrics.json").write_text("{}")  # left by an earlier run
    files = write_clustering(tmp_path, store, clustering.labels, info=info, report=False,
                             cluster_names={0: [("kitten", 0.9)], 1: [("puppy", 0.8)]})
    with open(files["assignments"], newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == ODD_NAMES
    assert [r["label"] for r in rows] == ["cat", "cat", "dog", "dog", "", "dog"]
    assert [int(r["cluster"]) for r in rows] == clustering.labels.tolist()
    assert {r["cluster_name"] for r in rows} == {"kitten", "puppy"}
    with open(files["skipped"], newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == [["path", "reason"], ["bad,file.jpg", 'not an "image"']]
    written = json.loads(files["metrics"].read_text())
    assert written == info and files["metrics"].stat().st_mtime_ns >= files["summary"].stat().st_mtime_ns
    assert not (tmp_path / "report.html").exists()
    assert "purity" in files["summary"].read_text()


def test_the_same_keys_with_and_without_labels_and_heads():
    store = _store()
    x = np.random.default_rng(1).normal(size=(6, 4)).astype(np.float32)
    clustering = cluster_embeddings(x, 2, n_init=1)
    labelled = clustering_metrics_info(store, clustering, features=x, spec="m", logits=x[:, :2], knn_k=2)
    assert {"acc", "acc_many_to_one", "nmi", "ari", "n_clusters_used", "n_evaluated", "knn_acc", "head_acc",
            "head_nmi", "head_ari", "head_n_clusters_used"} <= set(labelled)
    assert labelled["n_evaluated"] == 5 and labelled["n_skipped"] == 1 and labelled["k"] == 2
    assert labelled["embed_dim"] == 4 and labelled["spherical"] and labelled["whiten_dim"] == 0
    unlabelled = clustering_metrics_info(_store(labels=None), clustering, features=x, spec="m")
    assert not {"acc", "knn_acc"} & set(unlabelled)
    assert list(unlabelled) == [k for k in labelled if not k.startswith(("acc", "nmi", "ari", "n_clusters", "n_eval",
                                                                        "knn", "head"))]
    # The head's scores are those of its argmax labelling.
    head = evaluate_clustering(np.array([0, 0, 1, 1]), np.array([1, 1, 0, 0]), logits=np.eye(2)[[0, 0, 1, 1]])
    assert head["head_acc"] == pytest.approx(1.0) and head["acc"] == pytest.approx(1.0)
