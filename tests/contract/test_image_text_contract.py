"""The method contract for the image-text methods (clip, align, unicl), which train on
image-caption pairs rather than on the image-only stores of tests/contract/test_methods_contract.py:
one step gives a gradient to every trainable parameter, save -> resume equals an uninterrupted
run bitwise (the caption draws included), and two gloo processes run two steps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepclust.data.pairs import PairStore
from deepclust.train.builder import build_method_from_config
from deepclust.train.loop import train
from methods_helpers import contract_images, step_state
from torchrun_helpers import check_two_processes, run_two_processes

CELLS = [("clip", "small_cnn"), ("align", "small_cnn"), ("unicl", "small_cnn"), ("clip", "vit_tiny")]
# Two processes: the gathered losses' DDP equivalence is tested in tests/losses/test_contrastive.py;
# here the loop's DDP path, once per backbone kind (process start-up dominates the time).
DDP_CELLS = [("clip", "small_cnn"), ("unicl", "vit_tiny")]
BACKBONES = {"small_cnn": {"widths": [8, 16], "convs_per_stage": 1}, "vit_tiny": {"depth": 1, "embed_dim": 48}}
TEXT = {"embed_dim": 8, "context_length": 8, "text_width": 16, "text_layers": 1, "text_heads": 2, "vocab_size": 300}


def pair_store(n: int = 8) -> PairStore:
    """``n`` noise images, two captions each, labels 0/1 (UniCL's repeated labels)."""
    captions = [[f"image {i} a", f"the {'red' if i % 2 else 'blue'} thing {i}"] for i in range(n)]
    texts = sorted({c for cs in captions for c in cs})
    ids = [texts.index(c) for cs in captions for c in cs]
    return PairStore(images=contract_images(n), paths=[f"#{i}" for i in range(n)], labels=None, class_names=None,
                     skipped=[], source_id=f"contract-pairs-{n}", texts=texts, caption_ids=np.asarray(ids),
                     caption_offsets=np.arange(0, 2 * n + 1, 2), pair_labels=np.arange(n) % 2)


def cell_config(method: str, backbone: str, **kw):
    from deepclust.train.config import TrainConfig

    base = dict(method=method, backbone=backbone, backbone_kwargs=dict(BACKBONES[backbone]), method_kwargs=dict(TEXT),
                k=3, image_size=16, epochs=2, batch_size=4, lr=0.01, warmup_epochs=0, clip_grad=3.0, device="cpu",
                knn_every=0, monitor_samples=8, num_workers=0, collapse_check=False, torch_threads=1, seed=1)
    base.update(kw)
    return TrainConfig(**base)


pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


@pytest.mark.parametrize("method_name, backbone", CELLS)
def test_one_step_every_trainable_parameter_gets_a_gradient(method_name, backbone):
    from methods_helpers import context

    torch.manual_seed(0)
    store = pair_store()
    method = build_method_from_config(cell_config(method_name, backbone))
    ctx = context(store.images)
    ctx.store = store
    method.on_train_start(ctx)
    method.train()
    state = step_state(epoch=1, step=5)
    with torch.no_grad():
        batch = method.collate({"images": torch.from_numpy(store.images[:4]), "index": torch.arange(4)}, state)
    assert batch["text"].shape == (4, 8) and batch["labels"].tolist() == [0, 1, 0, 1]
    out = method.training_step(batch, state)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    trainable = {n: p for n, p in method.named_parameters() if p.requires_grad}
    missing = sorted(n for n, p in trainable.items() if p.grad is None)
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
    assert all(p.requires_grad for p in method.parameters())


@pytest.mark.parametrize("method_name, backbone", CELLS)
def test_save_then_resume_equals_an_uninterrupted_run_bitwise(tmp_path, monkeypatch, method_name, backbone):
    import deepclust.train.loop as loop

    cfg = cell_config(method_name, backbone)
    store = pair_store()
    full = train(cfg, store, tmp_path / "full", progress=False)

    def build_and_stop_at_epoch_two(cfg, **kwargs):
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
    torch.manual_seed(123)
    train(cfg, store, tmp_path / "split", method=build_method_from_config(cfg), resume=True, progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys() and "__extra__.tokenizer_json" in a
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"resumed weights differ: {different[:5]}"


DDP_SCRIPT = """
import json, sys
import torch
from contract.test_image_text_contract import DDP_CELLS, cell_config, pair_store
from deepclust.core.distributed import cleanup, get_rank
from deepclust.train.loop import train

torch.set_num_threads(1)
out = sys.argv[1]
results = {}
for method, backbone in DDP_CELLS:
    key = f"{method}-{backbone}"
    try:
        train(cell_config(method, backbone, epochs=1), pair_store(16), f"{out}/{key}", progress=False)
        results[key] = "ok"
    except Exception as exc:
        results[key] = f"{type(exc).__name__}: {str(exc)[:300]}"
rank = get_rank()
cleanup()
with open(f"{out}/rank{rank}.json", "w") as fh:   # after cleanup: proof this rank finished
    json.dump(results, fh)
"""


@pytest.mark.slow
def test_two_gloo_processes_run_two_steps(tmp_path):
    result = run_two_processes(DDP_SCRIPT, tmp_path / "image_text_ddp.py", str(tmp_path), timeout=300)
    check_two_processes(result, both_done=all((tmp_path / f"rank{r}.json").exists() for r in (0, 1)))
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for method, backbone in DDP_CELLS:
        key = f"{method}-{backbone}"
        assert ranks[0][key] == "ok" and ranks[1][key] == "ok", (ranks[0][key], ranks[1][key])
        state = json.loads((tmp_path / key / "state.json").read_text())
        assert (state["epoch"], state["step"], state["extra"]["world_size"]) == (1, 2, 2)
