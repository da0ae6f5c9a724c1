"""Nothing is lost when a checkpoint save is killed: SIGKILL at each file operation of a
save (the four files, the generation folder's rename, the `latest` switch, the pruning)
and `--resume` reaches the uninterrupted run bitwise."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import textwrap

import torch
from safetensors.torch import load_file

from deepclust.train import checkpoint as ckpt
from deepclust.train.loop import train
from robustness.harness import child_env
from toy_method import ToyMethod, toy_cfg, toy_store

N_OPS = 7  # config, model, optimizer, state, folder rename, latest switch, prune

# One child imports torch once (one thread, so forking is safe), then forks one grandchild
# per n that resumes epoch 2 and is SIGKILLed right after the n-th operation of its save.
CHILD = textwrap.dedent("""
    import os, sys, torch
    torch.set_num_threads(1)
    from toy_method import ToyMethod, toy_cfg, toy_store
    from deepclust.train.loop import train
    statuses = []
    for n, run in enumerate(sys.argv[1:], start=1):
        pid = os.fork()
        if pid == 0:
            os.environ["CRASH_ENV"] = str(n)
            torch.manual_seed(1)
            train(toy_cfg(), toy_store(), run, resume=True, progress=False, method=ToyMethod())
            os._exit(0)
        statuses.append(os.waitpid(pid, 0)[1])
    print(" ".join(str(os.WTERMSIG(s) if os.WIFSIGNALED(s) else -1) for s in statuses))
""".replace("CRASH_ENV", ckpt.CRASH_ENV))


def _fresh(seed: int) -> ToyMethod:
    torch.manual_seed(seed)
    return ToyMethod()


def _weights(run) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def test_sigkill_at_each_checkpoint_file_operation_then_resume_is_the_uninterrupted_run(tmp_path):
    store, cfg = toy_store(), toy_cfg()
    full = _weights(train(cfg, store, tmp_path / "full", method=_fresh(0), progress=False))
    first = _fresh(0)
    first.interrupt_at_step = 4 + 1  # stop at the first step of epoch 2: one checkpoint (epoch 1)
    base = tmp_path / "base"
    try:
        train(cfg, store, base, method=first, progress=False)
    except KeyboardInterrupt:
        pass
    assert ckpt.read_state(base)["epoch"] == 1

    runs = {n: tmp_path / f"kill{n}" for n in range(1, N_OPS + 1)}
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for run in runs.values():
        shutil.copytree(base, run, symlinks=True)
    proc = subprocess.run([sys.executable, str(script), *map(str, runs.values())], env=child_env(),
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == [str(int(signal.SIGKILL))] * N_OPS, proc.stderr[-3000:]
    for n in runs:
        state = ckpt.read_state(runs[n])  # the previous checkpoint survives (or the new one is complete)
        assert state is not None and state["epoch"] == (1 if n <= 5 else 2), n
        train(cfg, store, runs[n], method=_fresh(2), resume=True, progress=False)
        got = _weights(runs[n])
        assert got.keys() == full.keys()
        for key in full:
            assert torch.equal(got[key], full[key]), f"kill after op {n}: {key} differs"
        gens = sorted(p.name for p in runs[n].iterdir() if p.name.lstrip(".").startswith("ckpt-"))
        assert len(gens) == 1 and not gens[0].startswith("."), (n, gens)  # old and half-written ones pruned
