"""iBOT: masks built in collate on each global crop's patch grid, the student sees masked
global crops and the teacher unmasked ones, named weighted terms, the patch teacher
temperature scheduled by the loop, a ViT required; and iBOT / DINOv2 with vit_tiny at 32 px
under two gloo processes (the contract suite covers 16 px and exact resume)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepclust.methods import build_method
from deepclust.methods.common import MethodConfigError
from deepclust.models.backbones import build_backbone
from deepclust.train.step import Schedules
from methods_helpers import run_step, step_state, tiny_backbone
from torchrun_helpers import check_two_processes, run_two_processes

SMALL = dict(out_dim=16, hidden_dim=16, bottleneck_dim=8, augment={"n_local": 2, "local_size": 8})


def tiny_vit(size=16):
    return build_backbone("vit_tiny", img_size=size, depth=1, embed_dim=24, num_heads=2, patch_size=4)


def images(n=4, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.uint8)


def test_collate_builds_one_mask_per_global_crop_on_its_patch_grid():
    torch.manual_seed(0)
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, **SMALL)
    batch = method.collate({"images": torch.from_numpy(images(6)), "index": torch.arange(6)}, step_state())
    assert len(batch["crops"]) == 4 and batch["crops"][2].shape[-1] == 8
    assert batch["masks"].shape == (2 * 6, 16) and batch["masks"].dtype == torch.bool   # 16 px / 4 px: 4x4


def test_student_sees_masked_globals_and_teacher_unmasked(monkeypatch):
    torch.manual_seed(0)
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, **SMALL)
    seen = {}
    for who, enc in (("student", method.backbone), ("teacher", method.teacher_backbone)):
        original = enc.forward_tokens

        def spy(x, masks=None, _who=who, _orig=original):
            seen[_who] = masks
            return _orig(x, masks)
        monkeypatch.setattr(enc, "forward_tokens", spy)
    out = run_step(method, images())
    assert seen["teacher"] is None and seen["student"] is not None and seen["student"].shape == (8, 16)
    assert set(out.terms) == {"cls", "patch"} and out.weights == {"cls": 1.0, "patch": 1.0}
    assert method.backbone.trunk.mask_token is not None


def test_masked_tokens_change_the_student_only_where_masked():
    torch.manual_seed(0)
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, **SMALL).eval()
    with torch.no_grad():
        method.backbone.trunk.mask_token.fill_(3.0)
        x = method.preprocess(torch.from_numpy(images(2)))
        masks = torch.zeros(2, 16, dtype=torch.bool)
        masks[1, :5] = True
        plain, masked = method.backbone.forward_tokens(x), method.backbone.forward_tokens(x, masks)
    assert torch.allclose(plain["patch"][0], masked["patch"][0], atol=1e-6)
    assert not torch.allclose(plain["patch"][1], masked["patch"][1])


def test_patch_teacher_temperature_is_scheduled_by_the_loop():
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, warmup_teacher_patch_temp=0.04,
                          teacher_patch_temp=0.07, warmup_teacher_temp_epochs=4, teacher_temp=0.05, **SMALL)
    sched = Schedules.build(method, lr=0.1, min_lr=0.0, warmup_epochs=0, weight_decay=0.0, weight_decay_end=0.0,
                            epochs=6, steps_per_epoch=2)
    assert sched.teacher_patch_temp is not None
    assert sched.teacher_patch_temp[0] == pytest.approx(0.04) and sched.teacher_patch_temp[6] == pytest.approx(0.07)
    assert sched.state(5, 11).teacher_patch_temp == pytest.approx(0.07)
    assert sched.state(1, 2).teacher_patch_temp == pytest.approx(0.05)     # linspace(0.04, 0.07, 4)[1]
    assert sched.state(1, 2).teacher_temp == pytest.approx(np.linspace(0.04, 0.05, 4)[1])


def test_separate_patch_head_and_k_way_cluster_head():
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, **{**SMALL, "out_dim": "k"},
                          shared_head=False, patch_out_dim=12)
    out = run_step(method, images(), step_state(epoch=1))
    out.loss.backward()
    assert method.patch_head is not None and method.patch_head.last_layer.weight_v.grad is not None
    # weight_v of each head's last layer (weight_g is fixed)
    assert len(method.ema_pairs()) == 3 and len(method.last_layer_parameters()) == 2
    x = method.preprocess(torch.from_numpy(images()))
    assert method.cluster_logits(x).shape == (4, 3)


def test_eval_pooling_embeds_teacher_cls_and_mean_patch_token():
    torch.manual_seed(0)
    method = build_method("ibot", tiny_vit(), k=3, img_size=16, **SMALL, eval_pooling="cls+mean")
    encoder = method.encoder()
    assert encoder.embed_dim == 48 and encoder.trunk is method.teacher_backbone.trunk
    x = method.preprocess(torch.from_numpy(images()))
    method.eval()
    with torch.no_grad():
        tokens = method.teacher_backbone.forward_tokens(x)
        torch.testing.assert_close(method.embed(x), torch.cat([tokens["cls"], tokens["patch"].mean(1)], 1))
    assert build_method("ibot", tiny_vit(), k=3, img_size=16, **SMALL).encoder().embed_dim == 24  # cls
    with pytest.raises(MethodConfigError, match="eval_pooling 'cls'"):
        build_method("ibot", tiny_vit(), k=3, img_size=16, **{**SMALL, "out_dim": "k"}, eval_pooling="mean")


def test_a_conv_net_is_refused_with_a_clear_error():
    with pytest.raises(MethodConfigError, match="needs a ViT"):
        build_method("ibot", tiny_backbone(), k=3, img_size=8)


DDP_SCRIPT = """
import json, sys
import numpy as np
import torch
from safetensors.torch import load_file
from methods_helpers import ArrayStore
import deepclust.train.loop as loop
from deepclust.core.distributed import cleanup, get_rank
from deepclust.train.builder import build_method_from_config
from deepclust.train.config import TrainConfig
from deepclust.train.loop import train

torch.set_num_threads(1)
out = sys.argv[1]
store = ArrayStore(np.random.default_rng(0).integers(0, 256, (16, 32, 32, 3)).astype(np.uint8), None)


def stop_after_first_epoch(cfg, **kwargs):  # the run stops right after its first checkpoint
    method = build_method_from_config(cfg, **kwargs)
    original = method.on_epoch_start

    def on_epoch_start(ctx):
        if ctx.epoch == 1:
            raise KeyboardInterrupt("stop after the first checkpoint")
        original(ctx)

    method.on_epoch_start = on_epoch_start
    return method


results = {}
for method in ("ibot", "dinov2"):
    kw = dict(out_dim=16, hidden_dim=16, bottleneck_dim=8, augment={"n_local": 2})
    if method == "dinov2":
        kw["patch_out_dim"] = 12
    cfg = TrainConfig(method=method, backbone="vit_tiny", backbone_kwargs={"depth": 1, "embed_dim": 48},
                      method_kwargs=kw, k=3, image_size=32, epochs=2, batch_size=4, lr=0.01, warmup_epochs=0,
                      device="cpu", knn_every=0, monitor_samples=8, num_workers=0, collapse_check=False,
                      torch_threads=1, seed=1)
    try:
        train(cfg, store, f"{out}/{method}", progress=False)
        loop.build_method_from_config = stop_after_first_epoch
        try:
            train(cfg, store, f"{out}/{method}-split", progress=False)
            raise RuntimeError("the split run was not stopped")
        except KeyboardInterrupt:
            pass
        loop.build_method_from_config = build_method_from_config
        with open(f"{out}/{method}-split/state.json") as fh:
            assert json.load(fh)["epoch"] == 1, "the split run did not stop after its first epoch"
        torch.manual_seed(123)  # another initialisation: the weights must come from the checkpoint
        train(cfg, store, f"{out}/{method}-split", resume=True, progress=False)
        a = load_file(f"{out}/{method}/model.safetensors")
        b = load_file(f"{out}/{method}-split/model.safetensors")
        different = sorted(k for k in a if k not in b or not torch.equal(a[k], b[k]))
        results[method] = "ok" if a.keys() == b.keys() and not different else f"resume differs: {different[:5]}"
    except Exception as exc:
        results[method] = f"{type(exc).__name__}: {str(exc)[:300]}"
rank = get_rank()
cleanup()
with open(f"{out}/rank{rank}.json", "w") as fh:   # after cleanup: proof this rank finished
    json.dump(results, fh)
"""


@pytest.mark.slow
def test_ibot_and_dinov2_train_vit_tiny_at_32px_under_two_gloo_processes_and_resume_exactly(tmp_path):
    """The acceptance case: vit_tiny at 32 px, two gloo processes, 2 epochs; the same run
    stopped after its first checkpoint and resumed ends with bitwise the same weights."""
    result = run_two_processes(DDP_SCRIPT, tmp_path / "ddp.py", str(tmp_path), timeout=300)
    check_two_processes(result, both_done=all((tmp_path / f"rank{r}.json").exists() for r in (0, 1)))
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == {"ibot": "ok", "dinov2": "ok"}
    for method in ("ibot", "dinov2"):
        for run in (method, f"{method}-split"):
            state = json.loads((tmp_path / run / "state.json").read_text())
            assert (state["epoch"], state["step"], state["extra"]["world_size"]) == (2, 4, 2)
