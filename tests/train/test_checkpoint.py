"""Checkpoint files: optimiser state round-trips through safetensors + JSON, RNG states
through JSON, and a checkpoint only counts when state.json matches the tensor files."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from deepclust.errors import ModelNotAvailableError
from deepclust.train import checkpoint as ckpt
from deepclust.train.optim import build_optimizer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.LayerNorm(4), nn.Linear(4, 3))


def _steps(model: nn.Module, opt: torch.optim.Optimizer, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(8, 5, generator=g)
        opt.zero_grad()
        model(x).pow(2).mean().backward()
        opt.step()


def _groups(model: nn.Module) -> list[dict]:
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}]


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_optimizer_state_round_trip_through_files(tmp_path, name):
    model = _model()
    opt = build_optimizer(name, _groups(model), lr=0.05, momentum=0.9)
    _steps(model, opt, 3, seed=1)

    tensors, meta = ckpt.optimizer_state_to_safetensors(opt.state_dict())
    assert tensors, "the optimiser has tensor state after 3 steps"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_path / "opt.safetensors"))
    (tmp_path / "opt.json").write_text(json.dumps(meta))

    clone = _model(seed=5)
    clone.load_state_dict(model.state_dict())
    opt2 = build_optimizer(name, _groups(clone), lr=0.05, momentum=0.9)
    opt2.load_state_dict(ckpt.optimizer_state_from_safetensors(
        load_file(str(tmp_path / "opt.safetensors")), json.loads((tmp_path / "opt.json").read_text())))

    # continuing both gives identical parameters only if every piece of state came back
    _steps(model, opt, 2, seed=2)
    _steps(clone, opt2, 2, seed=2)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)
    if name == "adamw":
        assert opt2.param_groups[0]["betas"] == (0.9, 0.999)


def test_fresh_optimizer_differs_from_restored_one():
    """Guards the round-trip test: without loading the state, continuing gives other weights."""
    model = _model()
    opt = build_optimizer("adamw", _groups(model), lr=0.05)
    _steps(model, opt, 3, seed=1)
    clone = _model(seed=5)
    clone.load_state_dict(model.state_dict())
    opt2 = build_optimizer("adamw", _groups(clone), lr=0.05)
    _steps(model, opt, 2, seed=2)
    _steps(clone, opt2, 2, seed=2)
    assert not all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters()))


def test_rng_states_round_trip_through_json():
    torch.manual_seed(11)
    np.random.seed(11)
    random.seed(11)
    np.random.normal()  # leaves a cached gaussian in numpy's state
    states = json.loads(json.dumps(ckpt.get_rng_states()))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    ckpt.set_rng_states(states)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0])
    assert np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


class _WithExtra(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("queue", torch.zeros(4, 2))
        self.extra = {"assignments": np.zeros(5, dtype=np.int64), "epoch_of_kmeans": 0}

    def state_extra(self):
        return dict(self.extra)

    def load_state_extra(self, state):
        self.extra = {"assignments": np.asarray(state["assignments"]), "epoch_of_kmeans": state["epoch_of_kmeans"]}


def test_checkpoint_saves_and_loads_weights_buffers_and_extra_state(tmp_path):
    torch.manual_seed(0)
    m = _WithExtra()
    m.queue.normal_()
    m.extra = {"assignments": np.arange(5), "epoch_of_kmeans": 3}
    opt = build_optimizer("sgd", [{"params": list(m.parameters()), "weight_decay": 0.0}], lr=0.1)
    ckpt.save_checkpoint(tmp_path, method=m, optimizer=opt, config={"method": "x"}, epoch=2, step=10,
                         rng=[ckpt.get_rng_states()])
    gens = [p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt-")]
    assert len(gens) == 1 and os.readlink(tmp_path / "latest") == gens[0]
    assert sorted(p.name for p in (tmp_path / gens[0]).iterdir()) == ["config.json", "model.safetensors",
                                                                      "optimizer.safetensors", "state.json"]
    assert (tmp_path / "model.safetensors").resolve() == (tmp_path / gens[0] / "model.safetensors").resolve()
    m2 = _WithExtra()
    state = ckpt.load_checkpoint(tmp_path, m2, build_optimizer("sgd", [{"params": list(m2.parameters())}], lr=0.1))
    assert (state["epoch"], state["step"]) == (2, 10)
    assert torch.equal(m2.queue, m.queue) and torch.equal(m2.lin.weight, m.lin.weight)
    assert m2.extra["epoch_of_kmeans"] == 3 and m2.extra["assignments"].tolist() == [0, 1, 2, 3, 4]


def test_checkpoint_without_state_json_or_with_mismatched_files_is_not_complete(tmp_path):
    m = _WithExtra()
    opt = build_optimizer("sgd", [{"params": list(m.parameters())}], lr=0.1)
    ckpt.save_checkpoint(tmp_path / "a", method=m, optimizer=opt, config={}, epoch=1, step=1, rng=[])
    ckpt.save_checkpoint(tmp_path / "b", method=m, optimizer=opt, config={}, epoch=2, step=2, rng=[])
    gen_a = (tmp_path / "a" / "latest").resolve()
    gen_b = (tmp_path / "b" / "latest").resolve()
    # model file of another checkpoint: refused with a message
    (gen_b / "model.safetensors").replace(gen_a / "model.safetensors")
    with pytest.raises(ModelNotAvailableError, match="does not belong to state.json"):
        ckpt.read_state(tmp_path / "a")
    (gen_b / "state.json").unlink()
    with pytest.raises(ModelNotAvailableError, match="no complete checkpoint.*state.json is missing"):
        ckpt.load_checkpoint(tmp_path / "b", m)
    assert ckpt.read_state(tmp_path / "empty") is None
    assert not list(tmp_path.glob("*/.*tmp*")), "no temporary files are left behind"



def test_interrupt_guard_defers_sigterm_until_the_checkpoint_is_written(tmp_path):
    import os
    import signal

    from deepclust.train.interrupts import InterruptGuard

    m = _WithExtra()
    opt = build_optimizer("sgd", [{"params": list(m.parameters())}], lr=0.1)
    before = signal.getsignal(signal.SIGTERM)
    guard = InterruptGuard().install()
    try:
        with pytest.raises(KeyboardInterrupt, match="after the checkpoint"):
            with guard.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                ckpt.save_checkpoint(tmp_path, method=m, optimizer=opt, config={}, epoch=1, step=1, rng=[])
        assert ckpt.read_state(tmp_path)["epoch"] == 1  # written completely despite the signal
        with pytest.raises(KeyboardInterrupt):  # outside a checkpoint, SIGTERM stops at once
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
    finally:
        guard.restore()
    assert signal.getsignal(signal.SIGTERM) == before
