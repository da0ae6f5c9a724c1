"""``deepclust curate`` from the command line."""

from __future__ import annotations

import csv

import pytest

from curate_fixtures import make_duplicates_folder
from deepclust.cli import main
from deepclust.curate import DEFAULT_THRESHOLDS


def test_curate_command_writes_the_files_and_prints_counts(tmp_path, capsys):
    root = tmp_path / "source"
    originals, copies = make_duplicates_folder(root)
    evaluation = tmp_path / "eval"
    evaluation.mkdir()
    (evaluation / "e.png").write_bytes(originals[9].read_bytes())  # orig_09 leaked into the eval set
    out = tmp_path / "out"
    code = main(["curate", str(root), "--out", str(out), "--against", str(evaluation), "--target-size", "8",
                 "--clusters", "4,2", "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "8 of 20 images kept" in text and "1 contaminates" in text and "2 exact" in text
    for name in ("keep.csv", "removed.csv", "duplicates.csv", "summary.json", "curation.html", "skipped.csv"):
        assert (out / name).is_file()
    with open(out / "removed.csv", newline="", encoding="utf-8") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert rows[str(originals[9])]["kind"] == "contaminates"
    assert rows[str(originals[9])]["other"] == str(evaluation / "e.png")
    assert len(list(root.iterdir())) == 20  # nothing deleted from SOURCE


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "1.2"], "not a cosine similarity"),
    (["--target-size", "999"], "larger than the source"),
    (["--model", "missing_run_dir"], "unknown model spec"),
])
def test_curate_command_bad_input_exits_2_with_a_message(tmp_path, capsys, extra, message):
    root = tmp_path / "source"
    make_duplicates_folder(root)
    assert main(["curate", str(root), "--out", str(tmp_path / "out"), "--quiet", *extra]) == 2
    assert message in capsys.readouterr().err


def test_curate_help_names_the_defaults_and_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["curate", "--help"])
    text = capsys.readouterr().out
    assert "raw pixels by default" in text and "Example:" in text and "--per-query" in text
    t = DEFAULT_THRESHOLDS
    assert f"raw {t['raw']:.2f}, pca {t['pca']:.2f}, a model {t['model']:.2f}" in text
