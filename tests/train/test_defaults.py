"""Data-aware defaults (deepclust.train.defaults): the chosen settings follow the data, explicit
settings win, and `deepclust train` without a recipe states them in config.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepclust.cli import main
from deepclust.estimator import DeepClusterer
from deepclust.train.config import TrainConfig
from deepclust.train.defaults import (
    DEFAULT_BUDGET,
    DataProfile,
    apply_defaults,
    choose_defaults,
    default_budget,
    given_keys,
    profile_data,
)


def grey_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    g = np.random.default_rng(seed).integers(0, 256, (n, size, size, 1), dtype=np.uint8)
    return np.repeat(g, 3, axis=3)


def colour_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def test_profile_sees_size_count_and_colour():
    grey, colour = profile_data(grey_images(40, 28), cores=2), profile_data(colour_images(40, 48), cores=4)
    assert (grey.n_images, grey.image_size, grey.grayscale, grey.cores) == (40, 28, True, 2)
    assert (colour.image_size, colour.grayscale, colour.cores) == (48, False, 4)


@pytest.mark.parametrize("method", ["deepcluster", "swav", "dino", "dac"])
def test_conv_methods_follow_the_data(method):
    small_grey = choose_defaults(method, profile_data(grey_images(64, 28), cores=2))
    large_colour = choose_defaults(method, profile_data(colour_images(64, 64), cores=2))
    # wider CNN for larger colour images, the small one for small grey digits
    assert small_grey["backbone_kwargs"]["widths"] == [32, 64, 128]
    assert large_colour["backbone_kwargs"]["widths"] == [64, 128, 256]
    # gentle views for grey digits (no flip, no colour); flips and colour jitter for colour photos
    aug_grey = small_grey["method_kwargs"]["augment"]
    aug_colour = large_colour["method_kwargs"]["augment"]
    assert aug_grey["flip"] is False and not aug_grey.get("color_jitter")
    assert aug_colour["flip"] is True and aug_colour["color_jitter"]
    # the recipe's data fields are not carried over: the data decides them
    assert "data" not in small_grey and "image_size" not in small_grey
    # the final clustering is a SCAN head on the embeddings, whatever the data
    assert small_grey["cluster_head"] == large_colour["cluster_head"] == "scan"
    assert small_grey["cluster_head_kwargs"] == {"n_heads": 50}


def test_batch_and_threads_follow_the_number_and_size_of_images():
    few = choose_defaults("dino", profile_data(grey_images(200, 8), cores=2))
    many = choose_defaults("dino", DataProfile(n_images=10_000, image_size=28, grayscale=True, cores=2, bf16=False))
    huge = choose_defaults("dino", DataProfile(n_images=60_000, image_size=28, grayscale=True, cores=2, bf16=False))
    assert few["batch_size"] <= 200 // 4 and few["torch_threads"] == 1          # 8 px: one thread
    assert many["batch_size"] == 128 and many["torch_threads"] == 0             # 28 px: every core
    assert huge["batch_size"] == 256
    dac = choose_defaults("dac", DataProfile(n_images=10_000, image_size=28, grayscale=True, cores=2, bf16=False))
    dac_few = choose_defaults("dac", profile_data(grey_images(200, 8), cores=2))
    assert dac["batch_size"] == 256 and dac_few["batch_size"] <= 200 // 4   # pairs per step, capped by N / 4


def test_vit_methods_choose_the_patch_from_the_image_size():
    for images, patch, size in ((grey_images(64, 8), 2, None), (colour_images(64, 28), 4, None),
                                (grey_images(64, 64), 8, None), (grey_images(64, 28), 4, 16),
                                (grey_images(64, 32), 4, 16), (grey_images(64, 16), 2, None)):
        chosen = choose_defaults("ibot", profile_data(images, cores=2))
        assert chosen["backbone"].startswith("vit") and chosen["backbone_kwargs"]["patch_size"] == patch
        assert chosen.get("image_size") == size   # small grey images: a 4 x 4 grid at 16 px
    kept = choose_defaults("dinov2", profile_data(grey_images(64, 28), cores=2), keep_size=True)   # --size 28
    assert "image_size" not in kept and kept["backbone_kwargs"]["patch_size"] == 4
    assert "image_size" not in choose_defaults("dino", profile_data(grey_images(64, 28), cores=2))   # conv nets


def test_cli_trains_a_vit_on_small_grey_images_at_the_chosen_size(tmp_path):
    data = tmp_path / "grey.npz"
    np.savez(data, images=grey_images(48, 24)[..., 0], labels=np.arange(48) % 3)
    out = tmp_path / "run"
    assert main(["train", "--method", "ibot", "--data", str(data), "--out", str(out), "--epochs", "1", "--k", "3",
                 "--quiet", "--no-report", "--head", "none", "--set", "knn_every=0"]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["image_size"] == 16 and saved["backbone_kwargs"]["patch_size"] == 4
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 48 and "cluster_head" not in metrics    # --head none: k-means


def test_explicit_settings_win_and_a_default_budget_sizes_the_run():
    cfg = TrainConfig(method="dino", batch_size=32, method_kwargs={"out_dim": 256})
    new, chosen = apply_defaults(cfg, grey_images(400, 28), given={"method", "batch_size", "method_kwargs"},
                                 cores=2)
    assert new.batch_size == 32 and "batch_size" not in chosen
    assert new.method_kwargs["out_dim"] == 256 and new.method_kwargs["use_bn_in_head"] is True   # merged
    assert new.time_budget == "2m" and new.image_size == 28                     # 400 images: the shortest
    assert (default_budget(1797), default_budget(4000), default_budget(60_000)) == ("2m", "4m", DEFAULT_BUDGET)
    # --set backbone_kwargs.x=... is merged into the chosen backbone settings; another backbone drops them
    vit = TrainConfig(method="ibot", backbone="vit_tiny_convstem", backbone_kwargs={"layerscale_init": 0.1})
    merged, _ = apply_defaults(vit, grey_images(400, 28), given={"method", "backbone_kwargs"}, cores=2)
    assert merged.backbone_kwargs == {"embed_dim": 64, "depth": 3, "num_heads": 4, "patch_size": 4,
                                      "layerscale_init": 0.1}
    resnet, chosen_r = apply_defaults(TrainConfig(method="dino", backbone="resnet18"), grey_images(400, 28),
                                      given={"method", "backbone"}, cores=2)
    assert resnet.backbone == "resnet18" and "backbone_kwargs" not in chosen_r and resnet.backbone_kwargs == {}
    with_epochs, _ = apply_defaults(cfg, grey_images(400, 28), given={"method", "epochs"}, cores=2)
    assert with_epochs.time_budget is None
    assert given_keys({"epochs": None, "lr": 0.1}, ["method_kwargs.out_dim=64", "seed=3"]) == {
        "lr", "method_kwargs", "seed"}


def test_cli_without_recipe_states_the_chosen_settings(tmp_path, caplog):
    data = tmp_path / "grey.npz"
    labels = np.arange(48) % 3
    np.savez(data, images=grey_images(48, 12)[..., 0], labels=labels)
    out = tmp_path / "run"
    caplog.set_level("INFO", logger="deepclust")
    rc = main(["train", "--method", "deepcluster", "--data", str(data), "--out", str(out), "--epochs", "1",
               "--k", "3", "--quiet", "--no-report", "--set", "method_kwargs.n_clusters=6",
               "--set", "knn_every=0"])
    assert rc == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["image_size"] == 12 and saved["torch_threads"] == 1 and saved["batch_size"] == 12
    assert saved["backbone_kwargs"]["widths"] == [32, 64, 128] and saved["epochs"] == 1
    assert saved["method_kwargs"]["n_clusters"] == 6 and saved["time_budget"] is None
    assert saved["cluster_head"] == "scan"
    head = json.loads((out / "metrics.json").read_text())["cluster_head"]   # the final clustering used it
    assert head["kind"] == "scan" and len(head["head_losses"]) == 50    # DEFAULT_HEADS
    assert "no recipe: settings chosen for 48 grey images of 12 px" in caplog.text


def test_estimator_passes_the_time_budget():
    est = DeepClusterer(method="dino", time_budget="2m")
    assert est._build_config(8, 100).time_budget == "2m"
