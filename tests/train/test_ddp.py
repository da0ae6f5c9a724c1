"""Two-process DDP (gloo, CPU) through torchrun: the run finishes, rank 0 writes one
checkpoint, and the weights equal a one-process run with the same global batch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from deepclust.train.loop import train
from torchrun_helpers import check_two_processes, run_two_processes
from toy_method import ToyMethod, toy_cfg, toy_store

CFG = dict(epochs=1, optimizer="sgd", lr=0.5, clip_grad=0.0, method="toy_method:make_toy",
           method_kwargs={"noise": 0.0, "std_weight": 0.0}, num_workers=0)

SCRIPT = """
import sys
import torch
from toy_method import toy_cfg, toy_store
from deepclust.train.loop import train
from deepclust.core.distributed import all_gather_cat, all_reduce_mean, get_rank, get_world_size, cleanup

torch.set_num_threads(1)
cfg = toy_cfg(batch_size=8, **{cfg!r})
train(cfg, toy_store(), sys.argv[1], progress=False, trust_custom_code=True)
# the collective helpers, across real processes
rank = get_rank()
x = torch.full((rank + 1, 2), float(rank))
assert all_gather_cat(x).tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]], all_gather_cat(x)
assert all_reduce_mean(torch.tensor([float(rank)])).item() == 0.5
assert get_world_size() == 2
cleanup()
open(sys.argv[1] + f".rank{{rank}}.ok", "w").close()  # files, not prints: the two processes share stdout
"""


@pytest.mark.slow
def test_two_process_gloo_run_equals_one_process_run(tmp_path):
    result = run_two_processes(SCRIPT.format(cfg=CFG), tmp_path / "ddp_run.py", str(tmp_path / "ddp"), timeout=240)
    both_done = (tmp_path / "ddp.rank0.ok").exists() and (tmp_path / "ddp.rank1.ok").exists()
    # The ok files are written after training, the collective checks and destroy_process_group.
    check_two_processes(result, both_done=both_done)
    assert both_done
    assert (tmp_path / "ddp" / "state.json").exists()

    torch.set_num_threads(1)
    cfg = toy_cfg(batch_size=16, **{**CFG, "method": "toy"})
    torch.manual_seed(cfg.seed)  # the factory builds its weights right after seeding with cfg.seed + rank 0
    single = train(cfg, toy_store(), tmp_path / "single", method=ToyMethod(**CFG["method_kwargs"]), progress=False)

    ddp_w, one_w = load_file(str(tmp_path / "ddp" / "model.safetensors")), load_file(str(single / "model.safetensors"))
    assert ddp_w.keys() == one_w.keys()
    for key in ddp_w:
        torch.testing.assert_close(ddp_w[key], one_w[key], rtol=1e-5, atol=1e-6, msg=f"{key} differs")
    torch.manual_seed(cfg.seed)
    init = ToyMethod(**CFG["method_kwargs"])
    assert not torch.allclose(ddp_w["backbone.weight"], init.backbone.weight), "the DDP run trained"
