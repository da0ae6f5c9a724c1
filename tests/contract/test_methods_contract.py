"""The contract every method x backbone keeps (deepcluster, swav, dino, dac, scan x small_cnn,
resnet18, vit_tiny at 16 px, batch 4; ibot and dinov2 on vit_tiny only, because their patch
loss needs a ViT's patch tokens and mask token; scan's two epochs are one SCAN epoch and one
self-labelling epoch, so resume crosses the switch):

* one step gives a finite loss and a gradient for every trainable parameter (DINO's
  teacher and its weight-normalised last layer's fixed norm ``weight_g`` are frozen by
  design: requires_grad False);
* save -> resume gives bitwise the weights of an uninterrupted run;
* two gloo processes run two steps (one torchrun job loops over every cell, so the
  process start-up is paid once); DINO + vit_tiny is the regression test for the DDP crash
  "parameters that were not used in producing loss" (the ViT's unused mask token).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepclust.models.encoder import embed_images
from deepclust.train.builder import build_method_from_config
from deepclust.train.loop import train
from methods_helpers import COMBOS, ArrayStore, contract_config, contract_images, step_state
from torchrun_helpers import check_two_processes, run_two_processes

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.mark.parametrize("method_name, backbone", COMBOS)
def test_one_step_finite_loss_and_every_trainable_parameter_gets_a_gradient(method_name, backbone):
    torch.manual_seed(0)
    images = contract_images()
    method = build_method_from_config(contract_config(method_name, backbone))
    method.train()
    if method_name == "deepcluster":  # its step needs this epoch's k-means pseudo-labels
        from methods_helpers import context

        method.on_epoch_start(context(images, embed_all=lambda: embed_images(method.encoder(), images)))
    if method_name == "scan":  # its step pairs each image with a neighbour mined at the start
        from methods_helpers import context

        method.on_train_start(context(images))
    state = step_state(epoch=1, step=5)   # past DINO's frozen epoch and SwAV's frozen iterations
    x = torch.from_numpy(images[:4])
    with torch.no_grad():
        batch = method.collate({"images": x, "index": torch.arange(4)}, state)
    out = method.training_step(batch, state)
    assert torch.isfinite(out.loss) and out.terms
    out.loss.backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    missing = sorted(n for n, p in trainable.items() if p.grad is None)
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    frozen = sorted(n for n, p in method.named_parameters() if not p.requires_grad)
    if method_name in ("dino", "ibot", "dinov2"):
        fixed_norms = ("head.last_layer.weight_g", "patch_head.last_layer.weight_g")
        assert frozen and all(n.startswith("teacher_") or n in fixed_norms for n in frozen)
    else:
        assert frozen == []


@pytest.mark.parametrize("method_name, backbone", COMBOS)
def test_save_then_resume_equals_an_uninterrupted_run_bitwise(tmp_path, monkeypatch, method_name, backbone):
    import deepclust.train.loop as loop

    cfg = contract_config(method_name, backbone)
    store = ArrayStore(contract_images(), None)
    full = train(cfg, store, tmp_path / "full", progress=False)

    def build_and_stop_at_epoch_two(cfg, **kwargs):
        # train() still builds the method itself (same RNG use as the full run); its epoch
        # hook is wrapped to stop the run right after the first checkpoint.
        method = build_method_from_config(cfg, **kwargs)
        original = method.on_epoch_start

        def on_epoch_start(ctx):
            if ctx.epoch == 1:
                raise KeyboardInterrupt("contract: stop after the first checkpoint")
            original(ctx)

        method.on_epoch_start = on_epoch_start
        return method

    monkeypatch.setattr(loop, "build_method_from_config", build_and_stop_at_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, tmp_path / "split", progress=False)
    monkeypatch.undo()
    assert json.loads((tmp_path / "split" / "state.json").read_text())["epoch"] == 1
    torch.manual_seed(123)  # a different initialisation: the weights must come from the checkpoint
    train(cfg, store, tmp_path / "split", method=build_method_from_config(cfg), resume=True, progress=False)

    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ: {different[:5]}"


DDP_SCRIPT = """
import json, sys
import numpy as np
import torch
from methods_helpers import COMBOS, ArrayStore, contract_config, contract_images
from deepclust.core.distributed import cleanup, get_rank
from deepclust.train.loop import train

torch.set_num_threads(1)
out = sys.argv[1]
store = ArrayStore(contract_images(16), None)
results = {}
for method, backbone in COMBOS:
    key = f"{method}-{backbone}"
    try:
        cfg = contract_config(method, backbone, epochs=1)   # 16 images / (2 x 4) = 2 steps
        run = train(cfg, store, f"{out}/{key}", progress=False)
        results[key] = "ok"
    except Exception as exc:  # report every cell, not only the first failure
        results[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
rank = get_rank()
cleanup()
with open(f"{out}/rank{rank}.json", "w") as fh:   # files, not prints: the ranks share stdout
    json.dump(results, fh)
"""


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """Run the whole grid once in two gloo processes; ``{rank: {cell: "ok" | error}}``."""
    tmp = tmp_path_factory.mktemp("ddp_contract")
    result = run_two_processes(DDP_SCRIPT, tmp / "contract_ddp.py", str(tmp), timeout=400)
    check_two_processes(result, both_done=all((tmp / f"rank{r}.json").exists() for r in (0, 1)))
    return {r: json.loads((tmp / f"rank{r}.json").read_text()) for r in (0, 1)} | {"dir": tmp}


@pytest.mark.slow
@pytest.mark.parametrize("method_name, backbone", COMBOS)
def test_two_gloo_processes_run_two_steps(ddp_results, method_name, backbone):
    key = f"{method_name}-{backbone}"
    assert ddp_results[0][key] == "ok" and ddp_results[1][key] == "ok", (ddp_results[0][key], ddp_results[1][key])
    state = json.loads((ddp_results["dir"] / key / "state.json").read_text())
    assert (state["epoch"], state["step"], state["extra"]["world_size"]) == (1, 2, 2)
    weights = load_file(str(ddp_results["dir"] / key / "model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())


@pytest.mark.slow
def test_regression_two_process_dino_vit_tiny_passes_step_two(ddp_results):
    """`torchrun --nproc_per_node=2 -m deepclust train --method dino --backbone vit_tiny` failed
    at step 2 with "parameters that were not used in producing loss" (the unused mask token)."""
    assert ddp_results[0]["dino-vit_tiny"] == "ok" and ddp_results[1]["dino-vit_tiny"] == "ok"
    log = (ddp_results["dir"] / "dino-vit_tiny" / "log.csv").read_text().splitlines()
    assert len(log) == 2 and np.isfinite(float(log[1].split(",")[2]))
