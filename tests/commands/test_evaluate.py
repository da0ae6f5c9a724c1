"""`deepclust cluster --model hf:...` (features cached between runs) and `deepclust evaluate`."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from deepclust.cli import main
from deepclust.commands.evaluate import parse_fewshot
from deepclust.errors import DeepclustError
from deepclust.models.pretrained.dinov2 import Dinov2Encoder
from pretrained_fixtures import colour_images_dir, colour_test_images_dir, tiny_dinov2_dir  # noqa: F401


@pytest.fixture
def forward_calls(monkeypatch):
    """Counts DINOv2 forward passes (batches) made through our encoder."""
    calls = []
    original = Dinov2Encoder.tokens

    def counting(self, pixel_values):
        calls.append(len(pixel_values))
        return original(self, pixel_values)
    monkeypatch.setattr(Dinov2Encoder, "tokens", counting)
    return calls


def test_extract_features_hf_kind_is_cached(tiny_dinov2_dir, colour_images_dir, forward_calls):
    from deepclust.data.store import load_images
    from deepclust.features import extract_features

    store = load_images(str(colour_images_dir), progress=False)
    spec = f"hf:{tiny_dinov2_dir}"
    first = extract_features(store, spec, pooling="both", batch_size=8)
    assert first.shape == (18, 64) and sum(forward_calls) == 18
    again = extract_features(store, spec, pooling="both", batch_size=4)   # batch size is not in the key
    assert sum(forward_calls) == 18 and np.array_equal(first, again)     # served from the cache
    mean = extract_features(store, spec, pooling="mean")                  # another option: embeds again
    assert sum(forward_calls) == 36
    np.testing.assert_allclose(mean, first[:, 32:], atol=1e-5)


def test_cluster_command_with_pretrained_model_reuses_features(tmp_path, tiny_dinov2_dir,
                                                               colour_images_dir, forward_calls):
    spec = f"hf:{tiny_dinov2_dir}"
    assert main(["cluster", str(colour_images_dir), "--k", "3", "--model", spec,
                 "--out", str(tmp_path / "k3"), "--no-report", "--quiet"]) == 0
    embedded = sum(forward_calls)
    assert embedded == 18
    assert main(["cluster", str(colour_images_dir), "--k", "2", "--model", spec,
                 "--out", str(tmp_path / "k2"), "--no-report", "--quiet"]) == 0
    assert sum(forward_calls) == embedded  # second k: no new embedding
    rows = list(csv.DictReader(open(tmp_path / "k2" / "assignments.csv")))
    assert len(rows) == 18 and {r["cluster"] for r in rows} == {"0", "1"}


def test_evaluate_command_with_pretrained_and_pca(tmp_path, tiny_dinov2_dir, colour_images_dir,
                                                  colour_test_images_dir, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", f"hf:{tiny_dinov2_dir}", "--pooling", "mean",
                 "--train", str(colour_images_dir), "--test", str(colour_test_images_dir),
                 "--knn-k", "5", "--fewshot", "3way2shot", "--queries", "3", "--episodes", "30",
                 "--no-linear", "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["dim"] == 32 and m["n_train"] == m["n_test"] == 18 and m["knn_k"] == 5
    assert 0 <= m["knn_acc"] <= 1 and 0 <= m["fewshot_acc"] <= 1 and m["fewshot_ci95"] >= 0
    assert "linear_acc" not in m
    assert "k-NN (k=5)" in capsys.readouterr().out

    out = tmp_path / "eval_pca"
    assert main(["evaluate", "--model", "pca", "--pca-dim", "4", "--train", str(colour_images_dir),
                 "--test", str(colour_test_images_dir), "--knn-k", "3", "--fewshot", "none",
                 "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # Colour-dominated images: PCA of pixels separates them; the probe and k-NN must beat chance (1/3).
    assert m["dim"] == 4 and m["knn_acc"] > 0.9 and m["linear_acc"] > 0.9 and "fewshot_acc" not in m


def test_evaluate_needs_labels_and_valid_fewshot(tmp_path, colour_images_dir):
    assert parse_fewshot("5way1shot") == (5, 1) and parse_fewshot("10-way-5-shot") == (10, 5)
    assert parse_fewshot("none") is None
    with pytest.raises(DeepclustError, match="5way5shot"):
        parse_fewshot("five")
    flat = tmp_path / "flat"
    flat.mkdir()
    for p in list((colour_images_dir / "red").iterdir())[:4]:
        (flat / p.name).write_bytes(p.read_bytes())
    assert main(["evaluate", "--model", "raw", "--train", str(flat), "--test", str(flat),
                 "--out", str(tmp_path / "e"), "--quiet"]) == 2
