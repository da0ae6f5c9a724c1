"""End-to-end tests of ``deepclust cluster`` on tiny generated folders.

The images are three colour classes (red, green, blue) with pixel noise, so raw-pixel k-means
must recover the classes exactly: any mix-up of paths, labels or clusters between the
stages shows up as ACC < 1 or as a metrics.json that disagrees with assignments.csv.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from deepclust.cli import main
from deepclust.errors import DeepclustError
from deepclust.estimator import DeepClusterer
from pretrained_fixtures import tiny_clip_dir, tiny_dinov2_dir  # noqa: F401  (pytest fixtures)

COLOURS = {"blue": (30, 40, 220), "green": (40, 200, 50), "red": (220, 30, 40)}


def _write_images(folder: Path, colour, n: int, rng, prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        noise = rng.integers(-25, 26, size=(20, 20, 3))
        pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
        # Both PNG and JPEG, so the decoder's two main paths are exercised end to end.
        path = folder / f"{prefix}{i:02d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def colour_folder(tmp_path):
    """blue/ green/ red/ with 6, 5, 4 images, plus a zero-byte .jpg and a text file named .png."""
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    good = {}
    for (name, colour), n in zip(COLOURS.items(), (6, 5, 4)):
        for path in _write_images(root / name, colour, n, rng):
            good[path.resolve()] = name
    (root / "red" / "empty.jpg").write_bytes(b"")
    (root / "green" / "notes.png").write_text("this is not an image\n")
    bad = {(root / "red" / "empty.jpg").resolve(), (root / "green" / "notes.png").resolve()}
    return root, good, bad


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_cluster_folder_writes_consistent_outputs(colour_folder, tmp_path, capsys):
    root, good, bad = colour_folder
    out = tmp_path / "run"
    rc = main(["cluster", str(root), "--k", "3", "--out", str(out), "--quiet"])
    assert rc == 0
    for name in ("assignments.csv", "metrics.json", "skipped.csv", "summary.txt", "report.html"):
        assert (out / name).is_file(), name

    rows = _read_csv(out / "assignments.csv")
    assert {Path(r["path"]).resolve() for r in rows} == set(good)
    assert len(rows) == len(good)
    # The label column is the true class folder of each path.
    assert all(r["label"] == good[Path(r["path"]).resolve()] for r in rows)

    y_true = [r["label"] for r in rows]
    y_pred = [int(r["cluster"]) for r in rows]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["nmi"] == pytest.approx(normalized_mutual_info_score(y_true, y_pred), abs=1e-6)
    assert metrics["ari"] == pytest.approx(adjusted_rand_score(y_true, y_pred), abs=1e-6)
    # Colour classes are trivially separable: anything below perfect is a wiring bug.
    assert metrics["acc"] == pytest.approx(1.0)
    assert metrics["n_images"] == len(good) and metrics["n_skipped"] == len(bad) and metrics["k"] == 3
    assert sorted(metrics["cluster_sizes"]) == [4, 5, 6]

    skipped = _read_csv(out / "skipped.csv")
    assert {Path(r["path"]).resolve() for r in skipped} == bad
    assert all(r["reason"].strip() for r in skipped)

    summary = (out / "summary.txt").read_text().splitlines()
    assert len(summary) == 3
    assert all("purity 1.00" in line for line in summary)
    assert {line.split("majority ")[1].strip() for line in summary} == set(COLOURS)
    printed = capsys.readouterr().out
    assert "ACC 1.000" in printed and str(out / "report.html") in printed


def test_unlabelled_folder_has_sizes_but_no_scores(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "flat"
    paths = _write_images(root, COLOURS["red"], 3, rng, "r") + _write_images(root, COLOURS["blue"], 4, rng, "b")
    out = tmp_path / "run"
    assert main(["cluster", str(root), "--k", "2", "--out", str(out), "--no-report", "--quiet"]) == 0

    metrics = json.loads((out / "metrics.json").read_text())
    assert not {"acc", "nmi", "ari"} & set(metrics)
    assert sorted(metrics["cluster_sizes"]) == [3, 4] and metrics["n_images"] == 7
    rows = _read_csv(out / "assignments.csv")
    assert list(rows[0]) == ["path", "cluster"]
    assert sorted(Path(r["path"]).name for r in rows) == sorted(Path(p).name for p in paths)
    by_colour = {}
    for r in rows:
        by_colour.setdefault(Path(r["path"]).name[0], set()).add(r["cluster"])
    assert by_colour["r"] != by_colour["b"] and all(len(c) == 1 for c in by_colour.values())
    assert _read_csv(out / "skipped.csv") == []
    assert (out / "skipped.csv").read_text().strip() == "path,reason"
    assert not (out / "report.html").exists()


def test_pca_features_and_balanced_assignment(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "uneven"
    _write_images(root / "red", COLOURS["red"], 10, rng)
    _write_images(root / "green", COLOURS["green"], 4, rng)
    _write_images(root / "blue", COLOURS["blue"], 4, rng)

    plain, balanced = tmp_path / "plain", tmp_path / "balanced"
    args = ["cluster", str(root), "--k", "3", "--features", "pca", "--pca-dim", "4", "--no-report", "--quiet"]
    assert main(args + ["--out", str(plain)]) == 0
    assert main(args + ["--out", str(balanced), "--balanced"]) == 0

    plain_metrics = json.loads((plain / "metrics.json").read_text())
    assert plain_metrics["features"] == "pca" and plain_metrics["acc"] == pytest.approx(1.0)
    assert sorted(plain_metrics["cluster_sizes"]) == [4, 4, 10]
    # Balanced assignment must move images out of the big red cluster.
    sizes = json.loads((balanced / "metrics.json").read_text())["cluster_sizes"]
    assert sum(sizes) == 18 and max(sizes) - min(sizes) <= 2


@pytest.mark.parametrize("k, message", [("0", "at least 2"), ("1", "at least 2"), ("16", "only 15 usable")])
def test_bad_k_is_a_clear_error(colour_folder, tmp_path, capsys, k, message):
    root, _, _ = colour_folder
    out = tmp_path / "run"
    assert main(["cluster", str(root), "--k", k, "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("deepclust: error:") and message in err
    assert not (out / "metrics.json").exists()


def test_empty_and_all_bad_folders_are_clear_errors(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["cluster", str(empty), "--k", "2", "--out", str(tmp_path / "a"), "--quiet"]) == 2
    assert str(empty.name) in capsys.readouterr().err

    all_bad = tmp_path / "all_bad"
    all_bad.mkdir()
    (all_bad / "a.jpg").write_bytes(b"")
    (all_bad / "b.png").write_text("text")
    assert main(["cluster", str(all_bad), "--k", "2", "--out", str(tmp_path / "b"), "--quiet"]) == 2
    assert "deepclust: error:" in capsys.readouterr().err


def test_missing_model_is_a_clear_error(colour_folder, tmp_path, capsys):
    root, _, _ = colour_folder
    missing = tmp_path / "no-such-run"
    rc = main(["cluster", str(root), "--k", "3", "--model", str(missing), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc == 2
    assert "no-such-run" in capsys.readouterr().err


def test_self_label_without_a_head_is_a_clear_error(colour_folder, tmp_path, capsys):
    root, _, _ = colour_folder
    for extra in ([], ["--head", "none"]):   # raw pixels have no run head to fall back on
        assert main(["cluster", str(root), "--k", "2", "--self-label", "--out", str(tmp_path / "o"), "--quiet",
                     *extra]) == 2
        assert "--head scan" in capsys.readouterr().err
    images = np.random.default_rng(0).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(DeepclustError, match="--head scan"):   # an entropy weight of 0 is still a head option
        DeepClusterer(model="raw", k=2, entropy_weight=0.0, verbose=False).fit(images)


@pytest.mark.parametrize("command", ["cluster", "demo"])
def test_help_has_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "Example" in text and f"deepclust {command}" in text


def _run_module(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "deepclust", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_real_entry_point_and_exit_codes(colour_folder, tmp_path):
    root, good, _ = colour_folder
    out = tmp_path / "run"
    done = _run_module("cluster", str(root), "--k", "3", "--out", str(out), "--no-report", "--quiet")
    assert done.returncode == 0, done.stderr
    assert len(_read_csv(out / "assignments.csv")) == len(good)
    assert "ACC 1.000" in done.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    failed = _run_module("cluster", str(empty), "--k", "3", "--out", str(tmp_path / "x"))
    assert failed.returncode == 2
    assert "deepclust: error:" in failed.stderr and "Traceback" not in failed.stderr


def test_pretrained_features_and_clip_names(colour_folder, tmp_path, tiny_dinov2_dir, tiny_clip_dir):
    """--model hf:DIR and --namer hf:DIR with tiny random-weight models saved like real ones."""
    root, good, _ = colour_folder
    out = tmp_path / "named"
    rc = main(["cluster", str(root), "--k", "3", "--model", f"hf:{tiny_dinov2_dir}",
               "--namer", f"hf:{tiny_clip_dir}", "--vocab", "red,green,blue,cat", "--out", str(out), "--quiet"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == f"hf:{tiny_dinov2_dir}"
    assert metrics["spherical"] is True  # learned features default to cosine k-means
    names = metrics["cluster_names"]
    assert set(names) == {str(c) for c in range(3)}
    for ranked in names.values():
        assert len(ranked) == 3 and {n for n, _ in ranked} <= {"red", "green", "blue", "cat"}
        scores = [s for _, s in ranked]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-3

    rows = _read_csv(out / "assignments.csv")
    assert list(rows[0]) == ["path", "cluster", "label", "cluster_name"]
    assert len(rows) == len(good)
    assert all(r["cluster_name"] == names[r["cluster"]][0][0] for r in rows)
    summary = (out / "summary.txt").read_text()
    assert all(names[c][0][0] in summary for c in names)


def test_attention_maps_per_cluster_in_the_report(colour_folder, tmp_path, tiny_dinov2_dir, capsys):
    root, good, _ = colour_folder
    out = tmp_path / "attn"
    assert main(["cluster", str(root), "--k", "3", "--model", f"hf:{tiny_dinov2_dir}", "--attention",
                 "--out", str(out), "--quiet"]) == 0
    page = (out / "report.html").read_text()
    sizes = json.loads((out / "metrics.json").read_text())["cluster_sizes"]
    # up to 4 members per cluster get an attention overlay with DINO's 60% mask
    assert page.count("attention, 60% mask</figcaption>") == sum(min(4, n) for n in sizes)

    assert main(["cluster", str(root), "--k", "3", "--attention", "--out", str(tmp_path / "no"), "--quiet"]) == 2
    assert "attention maps need a ViT model" in capsys.readouterr().err


def test_vocab_without_namer_is_a_clear_error(colour_folder, tmp_path, capsys):
    root, _, _ = colour_folder
    assert main(["cluster", str(root), "--k", "3", "--vocab", "common", "--out", str(tmp_path / "o")]) == 2
    assert "--namer" in capsys.readouterr().err


@pytest.mark.parametrize("fixture", ["tiny_dinov2_dir", "tiny_clip_dir"])
def test_model_folder_without_hf_prefix(request, colour_folder, tmp_path, fixture):
    """A folder written by save_pretrained is recognised by its config.json, not misread as a run."""
    folder = request.getfixturevalue(fixture)
    root, good, _ = colour_folder
    out = tmp_path / "bare"
    assert main(["cluster", str(root), "--k", "3", "--model", str(folder), "--out", str(out),
                 "--no-report", "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["features"] == str(folder) and metrics["n_images"] == len(good) and metrics["spherical"]
    assert metrics["embed_dim"] == (32 if fixture == "tiny_dinov2_dir" else 16)


@pytest.fixture
def counted(monkeypatch):
    """Counts model loads (`load_model`, Hugging Face `from_pretrained`) and the images that go
    through each pretrained encoder's forward pass, in one process with an empty model cache."""
    import deepclust.features.load as load_module
    import deepclust.models.pretrained as pretrained
    import deepclust.pipeline as pipeline
    from deepclust.models.pretrained import ClipEncoder, Dinov2Encoder

    counts = {"load_model": [], "from_pretrained": [], "clip_images": 0, "dinov2_images": 0}
    monkeypatch.setattr(pretrained, "_LOADED", {})
    original_load, original_hf = load_module.load_model, pretrained._load

    def load_model(spec, **kw):
        counts["load_model"].append(str(spec))
        return original_load(spec, **kw)

    def hf_load(name, *args):
        counts["from_pretrained"].append(name)
        return original_hf(name, *args)

    monkeypatch.setattr(pipeline, "load_model", load_model)
    monkeypatch.setattr(pretrained, "_load", hf_load)
    for cls, key in ((ClipEncoder, "clip_images"), (Dinov2Encoder, "dinov2_images")):
        def tokens(self, x, masks=None, _original=cls.tokens, _key=key):
            counts[_key] += len(x)
            return _original(self, x, masks)
        monkeypatch.setattr(cls, "tokens", tokens)
    return counts


def test_attention_and_namer_load_and_embed_once(colour_folder, tmp_path, tiny_clip_dir, counted):
    """The same tiny CLIP as model and namer, with attention maps: one load, one embedding pass."""
    root, good, _ = colour_folder
    spec = str(tiny_clip_dir)
    out = tmp_path / "once"
    assert main(["cluster", str(root), "--k", "3", "--model", spec, "--namer", spec, "--attention",
                 "--vocab", "red,green,blue,cat", "--out", str(out), "--quiet"]) == 0
    assert counted["load_model"] == [spec] and len(counted["from_pretrained"]) == 1
    assert counted["clip_images"] == len(good)  # attention and naming reuse model and embeddings
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["cluster_names"]) == {"0", "1", "2"} and metrics["namer"] == spec
    page = (out / "report.html").read_text()
    assert page.count("attention, 60% mask</figcaption>") == sum(min(4, n) for n in metrics["cluster_sizes"])


def test_a_different_namer_embeds_once_with_itself(colour_folder, tmp_path, tiny_dinov2_dir, tiny_clip_dir, counted):
    root, good, _ = colour_folder
    assert main(["cluster", str(root), "--k", "3", "--model", str(tiny_dinov2_dir), "--namer", f"hf:{tiny_clip_dir}",
                 "--vocab", "red,green,blue", "--out", str(tmp_path / "two"), "--no-report", "--quiet"]) == 0
    assert counted["load_model"] == [str(tiny_dinov2_dir), f"hf:{tiny_clip_dir}"]
    assert len(counted["from_pretrained"]) == 2
    assert counted["dinov2_images"] == len(good) and counted["clip_images"] == len(good)


def test_the_same_clip_spelt_with_and_without_hf_is_one_model(colour_folder, tmp_path, tiny_clip_dir, counted):
    root, good, _ = colour_folder
    assert main(["cluster", str(root), "--k", "3", "--model", str(tiny_clip_dir), "--namer", f"hf:{tiny_clip_dir}",
                 "--vocab", "red,green,blue", "--out", str(tmp_path / "spelt"), "--no-report", "--quiet"]) == 0
    assert counted["load_model"] == [str(tiny_clip_dir)] and counted["clip_images"] == len(good)
    assert main(["cluster", str(root), "--k", "3", "--model", "raw", "--out", str(tmp_path / "raw"),
                 "--no-report", "--quiet"]) == 0  # `--model raw` is the pixel features
    assert json.loads((tmp_path / "raw" / "metrics.json").read_text())["features"] == "raw"
