"""`deepclust train` end to end on a tiny .npz (toy method through the `module:factory` hook),
`--resume` from the run's own config, and features from the trained run directory."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepclust.cli import main
from deepclust.errors import DataError
from toy_method import toy_store


@pytest.fixture()
def npz_source(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCLUST_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    store = toy_store(n=64)
    path = tmp_path / "toy.npz"
    np.savez(path, images=store.images, labels=store.labels)
    return path, store


def test_train_command_writes_run_then_resumes_and_serves_features(tmp_path, npz_source, capsys):
    path, store = npz_source
    run = tmp_path / "run"
    common = ["--no-progress", "--trust-custom-code"]
    rc = main(["train", "--method", "toy_method:make_toy", "--data", str(path), "--out", str(run),
               "--epochs", "1", "--batch-size", "16", "--size", "8", "--device", "cpu", "--k", "4",
               "--set", "monitor_samples=64", "--set", "knn_k=5", "--set", "method_kwargs.dim=8",
               "--set", "cluster_whiten_dim=4"] + common)
    assert rc == 0
    assert "64 images -> " in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["acc"] <= 1.0 and 0.0 <= metrics["knn_acc"] <= 1.0
    assert metrics["embed_dim"] == 8 and sum(metrics["cluster_sizes"]) == 64
    # The run dir holds the whole clustering of `deepclust cluster`, training curves included.
    for name in ("skipped.csv", "summary.txt", "report.html"):
        assert (run / name).is_file(), name
    assert 'id="plot-training"' in (run / "report.html").read_text()
    with open(run / "assignments.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 64 and {int(r["cluster"]) for r in rows} <= set(range(4))
    assert json.loads((run / "config.json").read_text())["method_kwargs"] == {"dim": 8}
    with open(run / "log.csv") as fh:
        first = list(csv.DictReader(fh))
    assert float(first[0]["knn_acc"]) >= 0 and first[0]["z_norm"]  # method outputs are logged too

    # resume with the run's own config, extended to 2 epochs
    assert main(["train", "--out", str(run), "--resume", "--epochs", "2"] + common) == 0
    assert json.loads((run / "state.json").read_text())["epoch"] == 2
    with open(run / "log.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]

    # features of a trained run: the backbone applied to the images, weights from model.safetensors
    from deepclust.data.store import load_images
    from deepclust.features import extract_features

    loaded = load_images(str(path), size=8, progress=False)
    feats = extract_features(loaded, str(run), cache=False, trust_custom_code=True)
    w = load_file(str(run / "model.safetensors"))
    x = torch.from_numpy(np.array(loaded.images)).permute(0, 3, 1, 2).float().div(255).flatten(1)
    expected = (x @ w["backbone.weight"].T + w["backbone.bias"]).numpy()
    np.testing.assert_allclose(feats, expected, rtol=1e-5, atol=1e-5)

    other_size = load_images(str(path), size=16, progress=False)
    with pytest.raises(DataError, match="trained on 8px"):
        extract_features(other_size, str(run), cache=False, trust_custom_code=True)

    # `cluster --model RUN` takes the run's working size from its config.json: a source of
    # 16 px images is brought down to the 8 px the run was trained on, with no --size.
    big = tmp_path / "big.npz"
    np.savez(big, images=np.repeat(np.repeat(store.images, 2, axis=1), 2, axis=2), labels=store.labels)
    out = tmp_path / "clusters"
    assert main(["cluster", str(big), "--model", str(run), "--k", "4", "--out", str(out),
                 "--no-report", "--quiet", "--trust-custom-code"]) == 0
    clustered = json.loads((out / "metrics.json").read_text())
    assert clustered["n_images"] == 64
    # ... and clusters the way the run's recipe says: features whitened to 4 dims, as the
    # final clustering of the run itself did; --whiten 0 turns it off.
    assert clustered["whiten_dim"] == 4 and metrics["whiten_dim"] == 4
    assert main(["cluster", str(big), "--model", str(run), "--k", "4", "--out", str(out),
                 "--whiten", "0", "--no-report", "--quiet", "--trust-custom-code"]) == 0
    assert json.loads((out / "metrics.json").read_text())["whiten_dim"] == 0


def test_train_command_errors_are_clear(tmp_path, npz_source, capsys):
    path, _ = npz_source
    assert main(["train", "--data", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "--method" in capsys.readouterr().err
    assert main(["train", "--method", "dino", "--out", str(tmp_path / "r")]) == 2
    assert "--data" in capsys.readouterr().err
    assert main(["train", "--method", "no_such_mod:f", "--data", str(path), "--out", str(tmp_path / "r"),
                 "--size", "8", "--device", "cpu", "--trust-custom-code"]) == 2
    assert "cannot import method factory" in capsys.readouterr().err

