"""Hostile inputs through the real CLI, all cases in one subprocess (`driver.py`).

Each case asserts what a user sees: exit 0 with the outputs written, or exit 2 with a
`deepclust: error:` line; never a signal death, never a traceback. Inputs: identical and
fully transparent images (t-SNE), a file name that is not UTF-8, CR/LF in names, a symlink
to `/` and one leaving the source, a full disk while building the store, damaged `.npz`
files (renamed `.npy`, truncated, a 2.7 TiB header, a zip bomb), `--out` naming a file,
a folder locked by a live run (and a stale lock), k larger than the images, bad `--set`
values, devices that do not exist, damaged checkpoints, and a run folder shipping code.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepclust.train import checkpoint as ckpt
from deepclust.train.loop import train
from robustness.harness import child_env
from toy_method import ToyMethod, toy_cfg, toy_store

DRIVER = Path(__file__).with_name("driver.py")
BAD_NAME = os.fsdecode(b"bad\xff\xfename.png")
CRLF_NAME = "two\r\nlines, \"quoted\".png"


def _png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format="PNG")


def _varied_folder(root: Path, n: int = 12, side: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        _png(root / f"img{i:02d}.png", rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
    return root


def _npz_cases(root: Path) -> dict[str, Path]:
    root.mkdir(parents=True)
    np.save(root / "x.npy", np.zeros((4, 8, 8, 3), np.uint8))
    (root / "x.npy").rename(root / "renamed.npz")
    np.savez(root / "good.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    data = (root / "good.npz").read_bytes()
    (root / "truncated.npz").write_bytes(data[: len(data) // 2])
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (1_000_000, 1000, 1000, 3)})
    with zipfile.ZipFile(root / "huge.npz", "w") as z:
        z.writestr("images.npy", header.getvalue() + bytes(64))
    with zipfile.ZipFile(root / "bomb.npz", "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        with z.open("images.npy", "w", force_zip64=True) as fh:
            shape = (96_000, 32, 32, 3)  # 281 MB of zeros in a few hundred kB
            np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False, "shape": shape})
            zeros = bytes(16 << 20)
            left = int(np.prod(shape))
            while left > 0:
                fh.write(zeros[: min(left, len(zeros))])
                left -= len(zeros)
    return {name: root / f"{name}.npz" for name in ("renamed", "truncated", "huge", "bomb")}


def _jpeg_claiming(path: Path, side: int) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = bytearray(buf.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    path.write_bytes(bytes(data))


def _toy_run(root: Path) -> Path:
    """A complete run of the toy method (tests/toy_method.py) on 8 px images."""
    torch.manual_seed(0)
    return train(toy_cfg(epochs=1, method="toy_method:make_toy"), toy_store(), root, method=ToyMethod(),
                 progress=False)


def _cnn_dino_run(root: Path) -> Path:
    """An untrained tiny DINO with a small CNN backbone, as a run folder."""
    from deepclust.train.builder import build_method_from_config
    from deepclust.train.config import TrainConfig

    cfg = TrainConfig(method="dino", backbone="small_cnn", backbone_kwargs={"widths": [8, 16], "convs_per_stage": 1},
                      image_size=8, k=2, method_kwargs={"out_dim": 3, "hidden_dim": 16, "bottleneck_dim": 8})
    method = build_method_from_config(cfg)
    ckpt.save_checkpoint(root, method=method, optimizer=torch.optim.SGD(method.parameters(), lr=0.1),
                         config=cfg.to_dict(), epoch=1, step=1, rng=[ckpt.get_rng_states()])
    return root


def _damaged_runs(run: Path, root: Path) -> dict[str, Path]:
    out = {}
    for what in ("model.safetensors", "state.json", "config.json"):
        copy = root / f"trunc-{what.split('.')[0]}"
        shutil.copytree(run, copy, symlinks=True)
        target = (copy / what).resolve()
        target.write_bytes(target.read_bytes()[:40])
        out[what] = copy
    flat = root / "flat"
    flat.mkdir()
    for name in ckpt.FILES:
        shutil.copy((run / name).resolve(), flat / name)
    out["flat"] = flat
    evil = root / "evil"
    shutil.copytree(run, evil, symlinks=True)
    config = (evil / "config.json").resolve()
    config.write_text(json.dumps({**json.loads(config.read_text()), "method": "evilmod:make_toy"}))
    (evil / "evilmod.py").write_text(f"open({str(root / 'EVIL_RAN')!r}, 'w').close()\n"
                                     "from toy_method import make_toy\n")
    out["evil"] = evil
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Build every input, run every case in one driver process; returns outcomes + paths."""
    tmp = tmp_path_factory.mktemp("robust")
    zero = np.zeros((8, 8, 3), np.uint8)
    for i in range(30):
        _png(tmp / "black" / f"b{i:02d}.png", zero)
        Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(
            (tmp / "clear").mkdir(exist_ok=True) or tmp / "clear" / f"c{i:02d}.png")
    names = _varied_folder(tmp / "names")
    _png(names / BAD_NAME, np.full((8, 8, 3), 200, np.uint8))
    _png(names / CRLF_NAME, np.full((8, 8, 3), 90, np.uint8))
    links = _varied_folder(tmp / "links")
    outside = _varied_folder(tmp / "outside", n=3)
    os.symlink("/", links / "root")
    os.symlink(outside, links / "elsewhere")
    os.symlink(links / "img00.png", links / "inside_link.png")  # stays inside: used
    jpeg = _varied_folder(tmp / "jpeg")
    _jpeg_claiming(jpeg / "liar.jpg", 4000)
    one = _varied_folder(tmp / "one", n=1)
    npz = _npz_cases(tmp / "npz")
    (tmp / "a_file").write_text("not a folder")
    live, stale = tmp / "locked_live", tmp / "locked_stale"
    live.mkdir()
    stale.mkdir()
    (live / ".deepclust.lock").write_text(f"{os.getpid()}\n")  # this test process: alive
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (stale / ".deepclust.lock").write_text(dead.stdout)
    run = _toy_run(tmp / "run")
    damaged = _damaged_runs(run, tmp)
    (tmp / "empty_run").mkdir()
    out = tmp / "out"
    trust = "--trust-custom-code"
    cases = {
        "identical": ["cluster", tmp / "black", "--k", "3", "--out", out / "identical", "--quiet"],
        "transparent": ["cluster", tmp / "clear", "--k", "3", "--out", out / "transparent", "--quiet"],
        "identical_model": ["cluster", tmp / "black", "--k", "3", "--model", run, trust, "--out",
                            out / "identical_model", "--quiet"],
        "names": ["cluster", names, "--k", "3", "--out", out / "names", "--quiet"],
        "names_train": ["train", "--method", "toy_method:make_toy", trust, "--data", names, "--out",
                        out / "names_train", "--epochs", "1", "--batch-size", "4", "--size", "8", "--k", "3",
                        "--device", "cpu", "--set", "monitor_samples=8", "--set", "knn_k=2", "--quiet"],
        "links": ["cluster", links, "--k", "3", "--out", out / "links", "--quiet", "--no-report"],
        "jpeg": ["cluster", jpeg, "--k", "2", "--out", out / "jpeg", "--quiet", "--no-report"],
        "disk_full": ["cluster", _varied_folder(tmp / "disk"), "--k", "2", "--out", out / "disk", "--quiet"],
        **{f"npz_{name}": ["cluster", path, "--k", "2", "--out", out / f"npz_{name}", "--quiet"]
           for name, path in npz.items()},
        "out_is_file": ["cluster", names, "--k", "2", "--out", tmp / "a_file", "--quiet"],
        "locked": ["cluster", names, "--k", "2", "--out", live, "--quiet", "--no-report"],
        "locked_train": ["train", "--method", "dino", "--data", "digits", "--out", live, "--epochs", "1"],
        "stale_lock": ["cluster", names, "--k", "2", "--out", stale, "--quiet", "--no-report"],
        "k10_one": ["cluster", one, "--k", "10", "--out", out / "k10", "--quiet"],
        "k1_one": ["cluster", one, "--k", "1", "--out", out / "k1", "--quiet"],
        "set_tag": ["train", "--method", "dino", "--data", "digits", "--out", out / "tag", "--set",
                    f"lr=!!python/object/apply:os.system ['touch {tmp / 'TAG_RAN'}']"],
        "set_yaml": ["train", "--method", "dino", "--data", "digits", "--out", out / "yaml", "--set", "lr=[1, 2"],
        "set_nan": ["train", "--method", "dino", "--data", "digits", "--out", out / "nan", "--set", "lr=.nan"],
        "set_inf": ["train", "--method", "dino", "--data", "digits", "--out", out / "inf", "--set", "lr=.inf"],
        "set_1e9": ["train", "--method", "dino", "--data", "digits", "--out", out / "e9", "--set", "epochs=1e9"],
        "resume_nothing": ["train", "--out", tmp / "empty_run", "--resume"],
        "gpu9_cluster": ["cluster", "digits", "--k", "3", "--out", out / "gpu9", "--device", "gpu9"],
        "gpu9_train": ["train", "--method", "dino", "--data", "digits", "--out", out / "gpu9t", "--device", "gpu9"],
        "gpu9_evaluate": ["evaluate", "--model", "raw", "--train", "digits", "--test", "digits", "--out",
                          out / "gpu9e", "--device", "gpu9"],
        "cuda_cluster": ["cluster", "digits", "--k", "3", "--out", out / "cuda", "--device", "cuda"],
        **{f"damaged_{name.split('.')[0]}": ["cluster", tmp / "black", "--k", "2", "--model", path, trust,
                                             "--out", out / f"damaged_{name}", "--quiet"]
           for name, path in damaged.items() if name != "evil"},
        "evil": {"argv": ["cluster", tmp / "black", "--k", "2", "--model", ".", "--out", out / "evil", "--quiet"],
                 "cwd": damaged["evil"]},
        "attention_cnn": ["attention", tmp / "black", "--model", _cnn_dino_run(tmp / "cnn_run"), "--out",
                          out / "attention_cnn", "--quiet"],
        "cluster_attention_cnn": ["cluster", tmp / "black", "--k", "2", "--model", tmp / "cnn_run", "--attention",
                                  "--out", out / "cluster_attention_cnn", "--quiet"],
        "verbose_after": ["cluster", _varied_folder(tmp / "v"), "--k", "2", "--out", out / "verbose", "-v",
                          "--quiet"],
    }
    cases["disk_full"] = {"argv": cases["disk_full"], "patch": "disk_full"}
    cases["evil_trusted"] = {**cases["evil"], "argv": cases["evil"]["argv"][:-2] + [trust, "--out",
                                                                                    out / "evil_trusted"]}
    cases["evil_trusted"]["argv"] = ["cluster", tmp / "black", "--k", "2", "--model", ".", trust, "--out",
                                     out / "evil_trusted", "--quiet"]
    spec = {name: (c if isinstance(c, dict) else {"argv": c}) for name, c in cases.items()}
    for c in spec.values():
        c["argv"] = [os.fspath(a) for a in c["argv"]]
        c["cwd"] = os.fspath(c["cwd"]) if c.get("cwd") else None
    (tmp / "cases.json").write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, str(DRIVER), str(tmp / "cases.json"), str(tmp / "results.json")],
                          env=child_env(DEEPCLUST_CACHE=str(tmp / "cache")), capture_output=True, text=True,
                          errors="replace", timeout=400)
    results = json.loads((tmp / "results.json").read_text()) if (tmp / "results.json").is_file() else {}
    return {"proc": proc, "results": results, "tmp": tmp, "out": out, "names": names, "links": links,
            "cases": spec}


def outcome(world: dict, name: str) -> dict:
    proc, results = world["proc"], world["results"]
    assert proc.returncode == 0, f"the driver died (rc {proc.returncode}) during case {len(results) + 1} " \
                                 f"after {list(results)}:\n{proc.stderr[-3000:]}"
    return results[name]


def expect(world: dict, name: str, code: int, message: str | None = None) -> dict:
    got = outcome(world, name)
    detail = f"{name}: {got['code']}\nstderr: {got['stderr'][-2500:]}\nstdout: {got['stdout'][-1000:]}"
    assert got["code"] == code, detail
    assert "Traceback" not in got["stderr"], detail
    if code == 2:
        assert "deepclust: error:" in got["stderr"], detail
    if message is not None:
        assert message in got["stderr"] + got["stdout"], detail
    return got


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("name", ["identical", "transparent", "identical_model"])
def test_identical_images_give_a_report_with_a_note_instead_of_a_native_tsne_crash(world, name):
    got = expect(world, name, 0, "distinct image")
    report = (world["out"] / name / "report.html").read_text()
    assert "no 2-D map is drawn" in report and len(_rows(world["out"] / name / "assignments.csv")) == 30
    assert "Traceback" not in got["stderr"]


@pytest.mark.parametrize("name", ["names", "names_train"])
def test_non_utf8_and_crlf_file_names_round_trip_through_every_csv_and_the_report(world, name):
    expect(world, name, 0)
    folder = world["out"] / name
    paths = {Path(r["path"]).name for r in _rows(folder / "assignments.csv")}
    assert BAD_NAME in paths and CRLF_NAME in paths and len(paths) == 14
    report = (folder / "report.html").read_bytes()
    report.decode("utf-8")  # valid UTF-8: the undecodable bytes are shown as U+FFFD
    assert "bad\ufffd\ufffdname.png".encode() in report
    assert json.loads((folder / "metrics.json").read_text())["n_images"] == 14


def test_symlinks_leaving_the_source_are_not_followed_and_are_listed_in_skipped_csv(world):
    expect(world, "links", 0)
    folder = world["out"] / "links"
    skipped = {Path(r["path"]).name: r["reason"] for r in _rows(folder / "skipped.csv")}
    assert skipped.keys() == {"root", "elsewhere"} and all("outside the source" in r for r in skipped.values())
    assert len(_rows(folder / "assignments.csv")) == 13  # 12 images + the link that stays inside


def test_a_jpeg_whose_header_claims_more_than_it_holds_is_skipped_as_truncated(world):
    expect(world, "jpeg", 0)
    skipped = _rows(world["out"] / "jpeg" / "skipped.csv")
    assert [Path(r["path"]).name for r in skipped] == ["liar.jpg"] and skipped[0]["reason"].startswith("truncated")


def test_a_full_disk_while_building_the_store_is_a_clear_error_and_leaves_no_temp_folder(world):
    expect(world, "disk_full", 2, "not enough disk space")
    stores = world["tmp"] / "cache" / "stores"
    assert not list(stores.glob(".tmp-*")) if stores.is_dir() else True


@pytest.mark.parametrize("name,message", [("renamed", "renamed .npz"), ("truncated", "not a .npz archive"),
                                          ("huge", "the file is damaged"), ("bomb", "zip bomb")])
def test_damaged_npz_files_are_clear_errors(world, name, message):
    expect(world, f"npz_{name}", 2, message)


@pytest.mark.parametrize("name,code,message", [
    ("out_is_file", 2, "is not a folder"),
    ("locked", 2, f"in use by another deepclust run (pid {os.getpid()})"),
    ("locked_train", 2, f"in use by another deepclust run (pid {os.getpid()})"),
    ("stale_lock", 0, None),
    ("k10_one", 2, "only 1 usable image(s) were found: clustering needs at least 2"),
    ("k1_one", 2, "at least 2"),
])
def test_output_folders_and_k_are_checked_before_the_work(world, name, code, message):
    expect(world, name, code, message)
    if name == "stale_lock":
        assert not (world["tmp"] / "locked_stale" / ".deepclust.lock").exists()  # taken over, released
        assert (world["tmp"] / "locked_stale" / "metrics.json").is_file()
    if name == "locked":
        assert not (world["tmp"] / "locked_live" / "assignments.csv").exists()


@pytest.mark.parametrize("name,message", [("set_tag", None), ("set_yaml", None), ("set_nan", "lr"),
                                          ("set_inf", "lr"), ("set_1e9", "epochs"),
                                          ("resume_nothing", "nothing to resume"),
                                          ("gpu9_cluster", "unknown device 'gpu9'"),
                                          ("gpu9_train", "unknown device 'gpu9'"),
                                          ("gpu9_evaluate", "unknown device 'gpu9'"),
                                          ("cuda_cluster", "no CUDA GPU is visible")])
def test_bad_settings_are_clear_errors_before_any_work(world, name, message):
    if name == "cuda_cluster" and torch.cuda.is_available():
        expect(world, name, 0)  # with a GPU, --device cuda is simply honoured
        return
    expect(world, name, 2, message)
    assert not (world["tmp"] / "TAG_RAN").exists()


@pytest.mark.parametrize("name,message", [("damaged_model", "damaged"), ("damaged_state", "damaged"),
                                          ("damaged_config", "damaged"), ("damaged_flat", "flat layout")])
def test_damaged_checkpoints_are_clear_errors(world, name, message):
    expect(world, name, 2, message)


def test_a_run_folder_never_imports_its_code_without_the_opt_in(world):
    expect(world, "evil", 2, "--trust-custom-code")
    order = list(world["results"])
    assert order.index("evil") < order.index("evil_trusted")
    # with the flag the module is imported: the marker appears only then (checked after both ran)
    expect(world, "evil_trusted", 0)
    assert (world["tmp"] / "EVIL_RAN").exists()


@pytest.mark.parametrize("name", ["attention_cnn", "cluster_attention_cnn"])
def test_attention_of_a_cnn_run_names_the_cnn_backbone_as_the_reason(world, name):
    expect(world, name, 2, "its backbone 'small_cnn' is a CNN, not a ViT")


def test_verbose_after_the_sub_command_works_without_a_matplotlib_flood(world):
    got = expect(world, "verbose_after", 0)
    assert "findfont" not in got["stderr"] and "matplotlib" not in got["stderr"]
