"""Acceptance tests of the training loop with a tiny toy method (no dependency on the real methods).

The toy: a linear backbone on 8x8 images, a k-way head (the "last layer"), two noisy views
drawn from torch's global RNG (so RNG restore matters), an MSE + centering loss with a
`center` buffer updated after each optimiser step (so buffers must be checkpointed).
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from deepclust.errors import CollapseError, DeepclustError
from deepclust.methods.base import Method
from deepclust.train.config import TrainConfig
from deepclust.core.distributed import all_reduce_mean
from deepclust.train.loop import NonFiniteLossError, train

SIZE = 8


class ToyMethod(Method):
    name = "toy"

    def __init__(self, k: int = 4, dim: int = 16, noise: float = 0.1, std_weight: float = 0.05):
        backbone = nn.Linear(SIZE * SIZE * 3, dim)
        backbone.embed_dim = dim
        super().__init__(backbone)
        self.head = nn.Linear(dim, k)
        self.register_buffer("center", torch.zeros(k))
        self.noise = noise
        self.std_weight = std_weight  # the batch-std term does not split over processes (0 in the DDP test)
        self.freeze_last_layer_epochs = 1
        self.interrupt_at_step: int | None = None   # raise KeyboardInterrupt after this global step
        self.nan_at_step: int | None = None
        self.constant_embedding = False
        self._batch_center: torch.Tensor | None = None

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return images.permute(0, 3, 1, 2).float() / 255.0

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        z = self.backbone(x.flatten(1))
        return z * 0 + 1 if self.constant_embedding else z

    def training_step(self, images, indices, ctx):
        x = self.preprocess(images)
        v1 = x + self.noise * torch.randn_like(x)
        v2 = x + self.noise * torch.randn_like(x)
        z1, z2 = self.head(self.embed(v1)), self.head(self.embed(v2))
        self._batch_center = all_reduce_mean(torch.cat([z1, z2]).detach().mean(0))
        loss = ((z1 - z2) ** 2).mean() + ((torch.cat([z1, z2]) - self.center) ** 2).mean() * 0.1
        loss = loss - self.std_weight * torch.cat([z1, z2]).std(0).mean()
        if self.nan_at_step is not None and ctx.step == self.nan_at_step:
            loss = loss * float("nan")
        return {"loss": loss, "z_norm": z1.detach().norm(dim=1).mean()}

    def after_optimizer_step(self, ctx):
        self.center.mul_(0.9).add_(0.1 * self._batch_center)
        if self.interrupt_at_step is not None and ctx.step + 1 == self.interrupt_at_step:
            raise KeyboardInterrupt("test interrupt")

    def last_layer_parameters(self):
        return list(self.head.parameters())


def make_toy(cfg: TrainConfig) -> ToyMethod:
    """Factory for `cfg.method = "test_train_resume:make_toy"` (used by the DDP test)."""
    return ToyMethod(k=cfg.k, **cfg.method_kwargs)


def toy_store(n: int = 64, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    # four colour prototypes plus noise: enough structure for k-means to find groups
    protos = rng.integers(0, 256, (4, 1, 1, 3))
    images = np.clip(protos[labels] + rng.normal(0, 30, (n, SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    return SimpleNamespace(images=images, labels=labels, paths=[f"toy#{i}" for i in range(n)])


def toy_cfg(**kw) -> TrainConfig:
    base = dict(method="toy", epochs=2, batch_size=16, optimizer="adamw", lr=0.01, warmup_epochs=0.5,
                weight_decay=0.04, weight_decay_end=0.1, clip_grad=1.0, knn_every=0, k=4,
                monitor_samples=64, num_workers=1, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        def after_optimizer_step(self, ctx):
            super().after_optimizer_step(ctx)
            self.seen_threads.add(torch.get_num_threads())

    method = ThreadRecorder()
    method.seen_threads = set()
    torch.set_num_threads(2)  # the autouse fixture restores the session's count afterwards
    train(toy_cfg(epochs=1, torch_threads=1), toy_store(), tmp_path / "run", method=method, progress=False)
    assert method.seen_threads == {1}
    assert torch.get_num_threads() == 2
    with pytest.raises(DeepclustError, match="torch_threads"):
        toy_cfg(torch_threads=-1)
