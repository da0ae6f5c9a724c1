"""Acceptance tests of the training loop with a tiny toy method (tests/toy_method.py):
exact resume, interrupts, the last-layer freeze, NaN and collapse stops, AMP, online k-NN,
thread count, weighted named loss terms in log.csv."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from deepclust.errors import CollapseError, DeepclustError
from deepclust.train.loop import NonFiniteLossError, train
from toy_method import ToyMethod, toy_cfg, toy_store

pytestmark = pytest.mark.usefixtures("one_thread")   # tests/conftest.py


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model.safetensors"))


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=f"{key} differs")


def fresh_method(seed: int) -> ToyMethod:
    torch.manual_seed(seed)  # a different init: resumed weights must come from the checkpoint
    return ToyMethod()


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_two_epochs_equal_one_epoch_kill_resume_one_epoch(tmp_path, optimizer):
    store, cfg = toy_store(), toy_cfg(optimizer=optimizer, lr=0.01 if optimizer == "adamw" else 2.0)
    full = train(cfg, store, tmp_path / "full", method=fresh_method(0), progress=False)

    # "kill" right after the first epoch's checkpoint: interrupt at the first step of epoch 2
    first = fresh_method(0)
    first.interrupt_at_step = 4 + 1  # 64 images / 16 = 4 steps per epoch
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, tmp_path / "split", method=first, progress=False)
    train(cfg, store, tmp_path / "split", method=fresh_method(1), resume=True, progress=False)

    assert_same(weights(full), weights(tmp_path / "split"))
    assert_same(load_file(str(full / "optimizer.safetensors")),
                load_file(str(tmp_path / "split" / "optimizer.safetensors")))
    # the run trained at all: the weights moved away from their initial values
    init = fresh_method(0).state_dict()
    assert not torch.allclose(init["backbone.weight"], weights(full)["backbone.weight"])
    # ... bitwise: the resumed run is the uninterrupted run
    for key, value in weights(full).items():
        assert torch.equal(value, weights(tmp_path / "split")[key]), key
    log_rows = (tmp_path / "split" / "log.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in log_rows[1:]] == ["1", "2"]
    assert (tmp_path / "split" / "log.csv").read_text() .split("\n")[0].startswith("epoch,step,loss,lr,wd")


def test_interrupt_mid_epoch_resumes_from_last_complete_epoch(tmp_path):
    store, cfg = toy_store(), toy_cfg(epochs=3)
    full = train(cfg, store, tmp_path / "full", method=fresh_method(0), progress=False)
    interrupted = fresh_method(0)
    interrupted.interrupt_at_step = 4 + 2  # two steps into epoch 2
    with pytest.raises(KeyboardInterrupt):
        train(cfg, store, tmp_path / "cut", method=interrupted, progress=False)
    import json

    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == 1
    train(cfg, store, tmp_path / "cut", method=fresh_method(2), resume=True, progress=False)
    assert_same(weights(full), weights(tmp_path / "cut"))


def test_last_layer_frozen_during_first_epoch(tmp_path):
    store = toy_store()
    method = fresh_method(0)
    head_before = method.head.weight.detach().clone()
    train(toy_cfg(epochs=1, weight_decay=0.0, weight_decay_end=0.0), store, tmp_path / "run",
          method=method, progress=False)
    assert torch.equal(method.head.weight.detach(), head_before)
    assert not torch.equal(weights(tmp_path / "run")["backbone.weight"], fresh_method(0).backbone.weight.detach())


def test_log_has_each_named_term_and_the_weighted_total(tmp_path):
    """log.csv holds loss_<term> for every term and `loss` = sum of weight * term (per step,
    so also for the epoch means)."""
    import csv

    method = fresh_method(0)
    train(toy_cfg(epochs=1), toy_store(), tmp_path / "run", method=method, progress=False)
    with open(tmp_path / "run" / "log.csv") as fh:
        row = next(csv.DictReader(fh))
    terms = {name: float(row[f"loss_{name}"]) for name in ("match", "center", "spread")}
    want = terms["match"] + 0.1 * terms["center"] + method.std_weight * terms["spread"]
    assert float(row["loss"]) == pytest.approx(want, rel=1e-5)
    assert terms["spread"] < 0 and float(row["z_norm"]) > 0


def test_nan_loss_stops_with_clear_error_and_keeps_checkpoint(tmp_path):
    method = fresh_method(0)
    method.nan_at_step = 6
    with pytest.raises(NonFiniteLossError, match="diverged"):
        train(toy_cfg(epochs=3), toy_store(), tmp_path / "run", method=method, progress=False)
    import json

    assert json.loads((tmp_path / "run" / "state.json").read_text())["epoch"] == 1
    assert torch.isfinite(weights(tmp_path / "run")["backbone.weight"]).all()


def test_collapse_raises_after_saving_checkpoint(tmp_path):
    method = fresh_method(0)
    method.constant_embedding = True
    with pytest.raises(CollapseError, match="collapsed at epoch 1"):
        train(toy_cfg(epochs=3), toy_store(), tmp_path / "run", method=method, progress=False)
    assert (tmp_path / "run" / "state.json").exists()
    assert "emb_std" in (tmp_path / "run" / "log.csv").read_text().splitlines()[0]


def test_refuses_to_overwrite_a_run_without_resume(tmp_path):
    store = toy_store()
    train(toy_cfg(epochs=1), store, tmp_path / "run", method=fresh_method(0), progress=False)
    with pytest.raises(DeepclustError, match="--resume"):
        train(toy_cfg(epochs=1), store, tmp_path / "run", method=fresh_method(0), progress=False)


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_steps_train_and_resume(tmp_path, amp):
    """Autocast (and the fp16 GradScaler, whose state is checkpointed) on the CPU."""
    import csv
    import json

    cfg = toy_cfg(epochs=2, amp=amp)
    method = fresh_method(0)
    method.interrupt_at_step = 5
    with pytest.raises(KeyboardInterrupt):
        train(cfg, toy_store(), tmp_path / "run", method=method, progress=False)
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert ("grad_scaler" in state["extra"]) == (amp == "fp16")
    train(cfg, toy_store(), tmp_path / "run", method=fresh_method(1), resume=True, progress=False)
    with open(tmp_path / "run" / "log.csv") as fh:
        losses = [float(r["loss"]) for r in csv.DictReader(fh)]
    assert len(losses) == 2 and all(np.isfinite(losses))
    assert not torch.allclose(weights(tmp_path / "run")["backbone.weight"], fresh_method(0).backbone.weight)


@pytest.mark.parametrize("amp, expected", [("auto", "float32"), ("bf16", "bfloat16")])
def test_auto_precision_follows_the_images_size_not_the_configured_one(tmp_path, monkeypatch, caplog, amp,
                                                                         expected):
    """On a bf16 CPU `amp: auto` picks bf16 only from CPU_BF16_MIN_SIZE px: the toy store's 8 px
    images stay float32 although the config still says image_size 32 and a listed backbone."""
    import logging

    from deepclust.core import device as dev

    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: True)
    cfg = toy_cfg(epochs=1, amp=amp, backbone="small_cnn", image_size=32)
    with caplog.at_level(logging.INFO, logger="deepclust"):
        train(cfg, toy_store(), tmp_path / "run", method=fresh_method(0), progress=False)
    assert f"precision: {expected} (amp: {amp})" in caplog.text


def _features(run_dir, images: np.ndarray) -> np.ndarray:
    w = weights(run_dir)
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div(255).flatten(1)
    return (x @ w["backbone.weight"].T + w["backbone.bias"]).numpy()


@pytest.mark.parametrize("train_labelled", [True, False])
def test_online_knn_uses_the_separate_eval_store(tmp_path, train_labelled):
    """The logged knn_acc equals k-NN computed directly from the saved weights. The eval
    labels are random, so the accuracy depends on exactly which images are bank and queries."""
    import csv

    from deepclust.evaluate.knn import knn_accuracy

    both = toy_store(104, seed=0)
    store = SimpleNamespace(images=both.images[:64], labels=both.labels[:64] if train_labelled else None)
    eval_store = SimpleNamespace(images=both.images[64:], labels=np.random.default_rng(5).integers(0, 4, 40))
    cfg = toy_cfg(epochs=1, knn_every=1, knn_k=5)
    run = train(cfg, store, tmp_path / "run", method=fresh_method(0), eval_store=eval_store, progress=False)
    with open(run / "log.csv") as fh:
        logged = float(next(csv.DictReader(fh))["knn_acc"])
    feats = _features(run, eval_store.images)
    if train_labelled:  # bank: the training store, queries: the eval store
        expected = knn_accuracy(_features(run, store.images), store.labels, feats, eval_store.labels, k=5, T=0.07)
    else:  # unlabelled training store: a seeded 80/20 split of the eval store
        rng = np.random.default_rng([cfg.seed, 7919])
        rng.choice(64, 64, replace=False)  # the monitor's subsample of the training store comes first
        idx = rng.permutation(40)
        bank, queries = np.sort(idx[:32]), np.sort(idx[32:])
        expected = knn_accuracy(feats[bank], eval_store.labels[bank], feats[queries], eval_store.labels[queries],
                                k=5, T=0.07)
    assert 0.0 < expected < 1.0
    assert logged == pytest.approx(expected, abs=1e-5)


def test_torch_threads_applies_during_training_and_is_restored(tmp_path):
    class ThreadRecorder(ToyMethod):
        def after_optimizer_step(self, state):
            super().after_optimizer_step(state)
            self.seen_threads.add(torch.get_num_threads())

    method = ThreadRecorder()
    method.seen_threads = set()
    torch.set_num_threads(2)  # the autouse fixture restores the session's count afterwards
    train(toy_cfg(epochs=1, torch_threads=1), toy_store(), tmp_path / "run", method=method, progress=False)
    assert method.seen_threads == {1}
    assert torch.get_num_threads() == 2
    with pytest.raises(DeepclustError, match="torch_threads"):
        toy_cfg(torch_threads=-1)
