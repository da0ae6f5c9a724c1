"""CLIP / ALIGN / UniCL methods: training on pairs works, the logit scale is clamped, LiT
locks the tower, and a trained run is a CLIP for `deepclust zeroshot` and `--namer`."""

from __future__ import annotations

import json
import math

import pytest
import torch

from deepclust.cli import main
from deepclust.data.pairs import load_pairs
from deepclust.errors import DeepclustError
from deepclust.features import load_model
from deepclust.methods.base import Method
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train
from methods_helpers import ArrayStore, epoch_losses, pattern_images
from pretrained_fixtures import tiny_dinov2_dir  # noqa: F401  (pytest fixture)

TINY = {"embed_dim": 16, "context_length": 16, "text_width": 32, "text_layers": 1, "text_heads": 2,
        "vocab_size": 300}


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_config(method: str = "clip", **kw) -> TrainConfig:
    base = dict(method=method, backbone="small_cnn", backbone_kwargs={"widths": [8, 16], "convs_per_stage": 1},
                method_kwargs=dict(TINY), k=3, image_size=16, epochs=2, batch_size=8, lr=0.05, warmup_epochs=0,
                device="cpu", knn_every=0, monitor_samples=8, num_workers=0, collapse_check=False, torch_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_the_learned_scale_is_clamped_after_each_optimiser_step():
    clip = build_method_from_config(tiny_config("clip"))
    assert clip.head.log_scale.item() == pytest.approx(math.log(1 / 0.07))
    with torch.no_grad():
        clip.head.log_scale.fill_(7.0)
    clip.after_optimizer_step(None)  # type: ignore[arg-type]
    assert clip.head.log_scale.item() == pytest.approx(math.log(100))
    assert clip.encoder().logit_scale == pytest.approx(100)
    align = build_method_from_config(tiny_config("align"))
    assert align.head.temperature.item() == 1.0 and not hasattr(align.head, "log_scale")
    with torch.no_grad():
        align.head.temperature.fill_(1e-4)
    align.after_optimizer_step(None)  # type: ignore[arg-type]
    assert align.head.temperature.item() == pytest.approx(0.01)


def test_training_without_captions_is_a_clear_error(tmp_path):
    images, labels = pattern_images(4)
    with pytest.raises(DeepclustError, match="image-caption pairs"):
        train(tiny_config(), ArrayStore(images, labels), tmp_path / "run", progress=False)


@pytest.mark.parametrize("method", ["clip", "align", "unicl"])
def test_each_objective_lowers_its_loss_on_templated_class_folders(tmp_path, tiny_image_folder, method):
    torch.manual_seed(0)
    store = load_pairs(tiny_image_folder, size=16, progress=False)
    run = train(tiny_config(method, epochs=6), store, tmp_path / method, progress=False)
    losses = epoch_losses(run)
    assert losses[-1] < 0.85 * losses[0], losses


def test_a_trained_run_classifies_zero_shot_and_names_clusters(tmp_path, tiny_image_folder, capsys):
    run = tmp_path / "run"
    code = main(["train", "--method", "unicl", "--data", str(tiny_image_folder), "--out", str(run), "--epochs", "8",
                 "--batch-size", "8", "--lr", "0.05", "--k", "3", "--backbone", "small_cnn", "--quiet", "--no-report",
                 "--set", "backbone_kwargs={widths: [8, 16], convs_per_stage: 1}", "--set", f"method_kwargs={TINY}",
                 "--set", "warmup_epochs=0", "--set", "torch_threads=1", "--set", "knn_every=0"])
    assert code == 0
    loaded = load_model(str(run), device="cpu")
    assert loaded.encoder.tokenizer is not None          # the trained BPE came back from the checkpoint
    classes = "circles,squares,stripes"
    assert main(["zeroshot", str(tiny_image_folder), "--model", str(run), "--classes", classes,
                 "--template", "itap of a {}.", "--out", str(tmp_path / "zs"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "zs" / "metrics.json").read_text())
    assert metrics["n_evaluated"] == 24 and metrics["accuracy"] > 0.6      # chance: 1/3, unseen template
    assert main(["cluster", str(tiny_image_folder), "--model", str(run), "--k", "3", "--namer", str(run),
                 "--vocab", classes, "--out", str(tmp_path / "named"), "--quiet", "--no-report"]) == 0
    summary = (tmp_path / "named" / "summary.txt").read_text()
    assert sum(name in summary for name in classes.split(",")) >= 2


def test_lit_locks_a_tiny_hf_dinov2_loaded_through_the_real_path(tmp_path, tiny_image_folder, tiny_dinov2_dir):
    cfg = tiny_config("clip", init=f"hf:{tiny_dinov2_dir}", backbone="vit", backbone_kwargs={}, image_size=32,
                      method_kwargs={**TINY, "lock_image": True}, epochs=1, lr=0.01)
    from deepclust.train.init_from import resolve_init

    cfg = resolve_init(cfg, {"method", "init", "method_kwargs", "epochs", "lr"})
    before = load_model(f"hf:{tiny_dinov2_dir}", device="cpu")
    store = load_pairs(tiny_image_folder, size=32, progress=False)
    run = train(cfg, store, tmp_path / "lit", progress=False)
    method = load_model(str(run), device="cpu").method
    assert isinstance(method, Method)
    tower = method.backbone
    assert not any(p.requires_grad for p in tower.parameters())
    pixels = before.encoder.preprocess(torch.from_numpy(store.images[:4].copy()))
    with torch.no_grad():      # the locked tower is still exactly the pretrained DINOv2
        assert torch.allclose(tower(pixels), before.encoder(pixels), atol=1e-4)
    torch.manual_seed(cfg.seed)      # the loop's seeding: the run's weights at step 0
    start = build_method_from_config(cfg)
    assert all(torch.equal(a, b) for a, b in zip(start.backbone.state_dict().values(),
                                                 method.backbone.state_dict().values()))
    assert not torch.equal(start.head.text.projection.weight, method.head.text.projection.weight)
    assert not torch.equal(start.head.image_projection.weight, method.head.image_projection.weight)


def test_lock_image_flag_and_paired_loading_on_the_command_line(tmp_path, tiny_image_folder):
    from deepclust.cli import build_parser
    from deepclust.commands.train import build_config, load_training_data

    args = build_parser().parse_args(["train", "--method", "clip", "--data", str(tiny_image_folder), "--out",
                                      str(tmp_path / "run"), "--lock-image", "--size", "16"])
    cfg = build_config(args)
    assert cfg.method_kwargs["lock_image"] is True
    store = load_training_data(cfg, progress=False)
    assert store.kind == "templates" and len(store) == 24
    cfg.method = "dino"
    assert not hasattr(load_training_data(cfg, progress=False), "caption_ids")
