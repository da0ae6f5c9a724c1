"""``--init SPEC`` (issue 14): student and teacher start equal to a Hugging Face DINOv2 / CLIP
tower or to a run's backbone, the run trains, resumes exactly, runs under two gloo processes,
and bad SPECs are clear errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepclust.errors import DeepclustError, ModelNotAvailableError
from deepclust.train.builder import build_method_from_config, load_trained_method
from deepclust.train.config import TrainConfig
from deepclust.train.init_from import INIT_GIVEN, freeze_first_blocks, resolve_init
from deepclust.train.init_warmup import warm_up_heads
from deepclust.train.loop import train
from pretrained_fixtures import tiny_trainable_dirs  # noqa: F401 (fixture)
from torchrun_helpers import check_two_processes, run_two_processes

DINO_KW = {"out_dim": 32, "hidden_dim": 32, "bottleneck_dim": 16, "augment": {"n_local": 2, "local_size": 16}}


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def tiny_store(n: int = 32, size: int = 32, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    protos = rng.integers(0, 256, (4, 1, 1, 3))
    images = np.clip(protos[labels] + rng.normal(0, 30, (n, size, size, 3)), 0, 255).astype(np.uint8)
    return SimpleNamespace(images=images, labels=labels, paths=[f"img#{i}" for i in range(n)])


def init_cfg(spec: str, **kw) -> TrainConfig:
    base = dict(method="dino", init=spec, data="tiny", epochs=1, batch_size=8, k=4, knn_every=0,
                monitor_samples=32, method_kwargs=DINO_KW, device="cpu", init_head_warmup_steps=2,
                collapse_check=False, num_workers=0, seed=0)
    base.update(kw)
    return resolve_init(TrainConfig(**base))


def hf_cls(spec_dir, mtype: str, x: torch.Tensor) -> torch.Tensor:
    from deepclust.models.pretrained.to_trainable import load_hf_vision_tower

    _, hf = load_hf_vision_tower(f"hf:{spec_dir}")
    out = hf(pixel_values=x, interpolate_pos_encoding=True) if mtype == "clip" else hf(pixel_values=x)
    return out.pooler_output


@pytest.mark.parametrize("mtype", ["dinov2", "clip"])
def test_student_and_teacher_start_equal_to_the_hf_model(tiny_trainable_dirs, mtype):  # noqa: F811
    spec_dir = tiny_trainable_dirs[mtype]
    cfg = init_cfg(f"hf:{spec_dir}")
    # SPEC's preprocessing and architecture; the adaptation defaults are stated in the config
    assert cfg.backbone == "vit" and cfg.backbone_kwargs["patch_size"] == 8 and cfg.image_size == 32
    expected_mean = [0.48145466, 0.4578275, 0.40821073] if mtype == "clip" else [0.485, 0.456, 0.406]
    assert cfg.method_kwargs["augment"]["mean"] == pytest.approx(expected_mean)
    assert (cfg.init_lr_scale, cfg.layer_decay, cfg.freeze_last_layer_epochs) == (0.1, 0.9, 1)
    method = build_method_from_config(cfg).eval()
    images = torch.from_numpy(tiny_store(4).images)
    x = method.encoder().preprocess(images)
    with torch.no_grad():
        ref = hf_cls(spec_dir, mtype, x)
        for backbone in (method.backbone, method.teacher_backbone):
            torch.testing.assert_close(backbone(x), ref, rtol=1e-5, atol=1e-5)
        assert method.encoder().preprocess(images).shape[-1] == 32
    # the head-only warm-up leaves both backbones at the pretrained weights and ends with
    # teacher head = student head
    head_before = [p.clone() for p in method.head.parameters()]
    ctx = SimpleNamespace(images=tiny_store(16).images, device=torch.device("cpu"), amp_dtype=None,
                          steps_per_epoch=2, rank=0, world_size=1)
    report = warm_up_heads(method, cfg, ctx)  # type: ignore[arg-type]
    assert report is not None and report["steps"] == 2
    assert any(not torch.equal(a, b) for a, b in zip(head_before, method.head.parameters()))
    for t, s in zip(method.teacher_head.state_dict().values(), method.head.state_dict().values()):
        assert torch.equal(t, s)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method.backbone(x), ref, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(method.teacher_backbone(x), ref, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad for p in method.backbone.parameters())


def test_cli_one_epoch_from_hf_then_cluster_the_run(tiny_trainable_dirs, tmp_path, capsys):  # noqa: F811
    from deepclust.cli import main

    data = tmp_path / "data.npz"
    store = tiny_store(32)
    np.savez(data, images=store.images, labels=store.labels)
    out = tmp_path / "run"
    rc = main(["train", "--method", "dino", "--init", f"hf:{tiny_trainable_dirs['dinov2']}", "--data", str(data),
               "--out", str(out), "--epochs", "1", "--batch-size", "8", "--k", "4", "--quiet",
               "--set", f"method_kwargs={json.dumps(DINO_KW)}", "--set", "init_head_warmup_steps=2",
               "--set", "knn_every=0", "--set", "num_workers=0", "--no-report"])
    assert rc == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["init"].startswith("hf:") and saved["backbone"] == "vit" and saved["layer_decay"] == 0.9
    assert saved["image_size"] == 32 and saved["init_head_warmup_steps"] == 2
    assert np.isfinite(float((out / "log.csv").read_text().splitlines()[1].split(",")[2]))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 32 and metrics["backbone"] == "vit"
    # a normal run: `cluster --model RUN` loads it without the HF model (weights from the checkpoint)
    rc = main(["cluster", str(data), "--model", str(out), "--k", "4", "--out", str(tmp_path / "cl"), "--quiet",
               "--no-report"])
    assert rc == 0 and (tmp_path / "cl" / "assignments.csv").is_file()
    from deepclust.features import load_model

    encoder = load_model(str(out)).encoder  # attention maps: the trainable ViT's last self-attention
    x = encoder.preprocess(torch.from_numpy(store.images[:2]))
    assert encoder.has_attention and encoder.last_selfattention(x).shape == (2, 2, 1 + 16, 1 + 16)


def test_resume_is_exact(tiny_trainable_dirs, tmp_path, monkeypatch):  # noqa: F811
    import deepclust.train.loop as loop

    cfg = init_cfg(f"hf:{tiny_trainable_dirs['dinov2']}", epochs=2)
    store = tiny_store(16)
    full = train(cfg, store, tmp_path / "full", progress=False)
    one_epoch = loop._train_epoch

    def killed_in_epoch_2(run):
        if run.ctx.epoch == 1:
            raise KeyboardInterrupt
        return one_epoch(run)

    monkeypatch.setattr(loop, "_train_epoch", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, tmp_path / "split", progress=False)
    monkeypatch.setattr(loop, "_train_epoch", one_epoch)
    train(cfg, store, tmp_path / "split", resume=True, progress=False)  # no warm-up again: weights from the checkpoint
    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_init_from_a_run_takes_its_backbone_not_its_heads_or_optimiser(tmp_path):
    store = tiny_store(16)
    base = dict(method="dino", data="tiny", epochs=1, batch_size=8, k=4, knn_every=0, monitor_samples=16,
                method_kwargs=DINO_KW, device="cpu", collapse_check=False, num_workers=0, backbone="vit_tiny",
                backbone_kwargs={"depth": 2, "embed_dim": 32, "num_heads": 2}, image_size=16)
    named = {**DINO_KW, "augment": {**DINO_KW["augment"], "mean": "cifar10"}}
    first = train(TrainConfig(**{**base, "method_kwargs": named}), store, tmp_path / "A", progress=False)
    source, _ = load_trained_method(first)
    cfg = resolve_init(TrainConfig(**{**base, "init": str(first), "backbone": "small_cnn", "backbone_kwargs": {},
                                      "init_head_warmup_steps": 0, "seed": 5}), given={"image_size"})
    assert cfg.backbone == "vit_tiny" and cfg.backbone_kwargs["depth"] == 2 and cfg.layer_decay == 0.9
    assert cfg.backbone_kwargs["patch_size"] == 4  # pinned: A trained at 32 px, B may use another size
    assert cfg.method_kwargs["augment"]["mean"] == "cifar10"  # A's normalisation
    method = build_method_from_config(cfg)
    teacher_a = source.teacher_backbone.state_dict()
    for module in (method.backbone, method.teacher_backbone):
        for key, value in module.state_dict().items():
            assert torch.equal(value, teacher_a[key]), key
    # heads are fresh, not A's
    assert not torch.equal(method.head.mlp[0].weight, source.head.mlp[0].weight)
    second = train(cfg, store, tmp_path / "B", progress=False)
    state = json.loads((second / "state.json").read_text())
    assert state["step"] == 2  # B's own schedule from step 0, not A's
    adam_steps = {k: v for k, v in load_file(str(second / "optimizer.safetensors")).items() if k.endswith(".step")}
    assert adam_steps and all(float(v) == 2.0 for v in adam_steps.values())  # fresh optimiser: B's 2 steps only


def test_bad_specs_and_mismatched_backbones_are_clear_errors(tiny_trainable_dirs, tmp_path):  # noqa: F811
    with pytest.raises(DeepclustError, match="not a model to start from"):
        init_cfg(str(tmp_path / "nothing"))
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelNotAvailableError, match="supported: dinov2"):
        init_cfg(f"hf:{bert}")
    spec = f"hf:{tiny_trainable_dirs['dinov2']}"
    with pytest.raises(DeepclustError, match="mismatched backbone"):
        resolve_init(TrainConfig(method="dino", init=spec, backbone="resnet18"), given={"backbone"})
    with pytest.raises(DeepclustError, match="mismatched backbone"):
        resolve_init(TrainConfig(method="dino", init=spec, backbone="vit", backbone_kwargs={"embed_dim": 64}),
                     given={"backbone", "backbone_kwargs"})
    # DeepCluster's Sobel input has 2 channels: the 3-channel patch embedding does not fit
    with pytest.raises(ModelNotAvailableError, match="mismatched backbone"):
        build_method_from_config(resolve_init(TrainConfig(method="deepcluster", init=spec,
                                                          method_kwargs={"sobel": True})))


def test_freeze_blocks_keeps_the_first_blocks_fixed(tiny_trainable_dirs, tmp_path):  # noqa: F811
    cfg = init_cfg(f"hf:{tiny_trainable_dirs['dinov2']}", freeze_blocks=1)
    method = build_method_from_config(cfg)
    frozen = {n for n, p in method.backbone.trunk.named_parameters() if not p.requires_grad}
    assert frozen and all(n.split(".")[0] in ("patch_embed", "cls_token", "pos_embed") or n.startswith("blocks.0.")
                          for n in frozen)
    assert all(p.requires_grad for p in method.backbone.trunk.blocks[1].parameters())
    out = train(cfg, tiny_store(16), tmp_path / "run", progress=False)
    start = method.backbone.trunk.state_dict()
    trained = load_file(str(out / "model.safetensors"))
    prefix = "backbone.trunk."
    assert all(torch.equal(trained[prefix + n], start[n]) for n in frozen)
    assert not torch.equal(trained[prefix + "blocks.1.mlp.fc1.weight"], start["blocks.1.mlp.fc1.weight"])
    with pytest.raises(DeepclustError, match="3 but the ViT has 2"):
        freeze_first_blocks(method, 3)


def test_train_resolves_a_library_config_itself(tiny_trainable_dirs):  # noqa: F811
    raw = TrainConfig(method="dino", init=f"hf:{tiny_trainable_dirs['clip']}", image_size=16)
    cfg = resolve_init(raw, given=INIT_GIVEN)
    assert cfg.backbone == "vit" and cfg.image_size == 16 and cfg.backbone_kwargs["act"] == "quick_gelu"
    assert resolve_init(cfg, given=INIT_GIVEN) == cfg  # idempotent: resuming resolves to the same config


@pytest.mark.slow
def test_two_gloo_processes_train_from_init(tiny_trainable_dirs, tmp_path):  # noqa: F811
    script = f"""
    import sys
    import numpy as np
    import torch
    from types import SimpleNamespace
    from deepclust.core.distributed import cleanup, get_rank
    from deepclust.train.config import TrainConfig
    from deepclust.train.loop import train

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    store = SimpleNamespace(images=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8), labels=None)
    cfg = TrainConfig(method="dino", init={f"hf:{tiny_trainable_dirs['dinov2']}"!r}, epochs=1, batch_size=4, k=4,
                      knn_every=0, monitor_samples=16, method_kwargs={DINO_KW!r}, device="cpu",
                      init_head_warmup_steps=2, collapse_check=False, num_workers=0)
    train(cfg, store, sys.argv[1], progress=False)
    rank = get_rank()
    cleanup()
    open(sys.argv[1] + f".rank{{rank}}.ok", "w").close()
    """
    result = run_two_processes(script, tmp_path / "ddp_init.py", str(tmp_path / "ddp"), timeout=240)
    both = (tmp_path / "ddp.rank0.ok").exists() and (tmp_path / "ddp.rank1.ok").exists()
    check_two_processes(result, both_done=both)
    assert both
    state = json.loads((tmp_path / "ddp" / "state.json").read_text())
    assert state["step"] == 4 and state["extra"]["world_size"] == 2
    weights = load_file(str(tmp_path / "ddp" / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
