"""Run-directory checkpoints: safetensors for tensors, JSON for everything else.

A run directory holds one checkpoint *generation* per saved epoch, written as a whole:

    ckpt-<epoch>-<id>/config.json            the TrainConfig (flat JSON)
    ckpt-<epoch>-<id>/model.safetensors      method.state_dict() (+ method.state_extra() tensors, "__extra__.")
    ckpt-<epoch>-<id>/optimizer.safetensors  the optimiser's tensor state ("state.<param id>.<key>")
    ckpt-<epoch>-<id>/state.json             epochs completed, global step, optimiser's non-tensor state,
                                             RNG states, checkpoint id (written last)
    latest -> ckpt-<epoch>-<id>              the pointer: a symlink, switched atomically
    config.json, model.safetensors, ...      symlinks to latest/<file> (for people and tools)

Saving writes the four files (each fsync'ed) into a hidden `.ckpt-...tmp` folder, renames
it to `ckpt-<epoch>-<id>`, then replaces the `latest` symlink with one `os.replace`, and
only then deletes older generations. A kill at any moment therefore leaves the previous
generation intact and pointed to (or the new one, complete). Reading follows `latest` and
falls back to the newest complete generation when the pointer is missing or broken; a
generation is complete when all four files parse and both safetensors files carry the
checkpoint id of its state.json. Nothing is loaded with pickle: only
`safetensors.torch.load_file` and `json`.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import shutil
import signal
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from deepclust.core.io import atomic_save_safetensors, atomic_symlink, atomic_write_json, fsync_dir
from deepclust.errors import ModelNotAvailableError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXTRA_PREFIX = "__extra__."
FILES = (CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, STATE_FILE)
LATEST = "latest"
GENERATION_PREFIX = "ckpt-"
# Test hook: SIGKILL this process right after the n-th file operation of a checkpoint (1-based),
# to prove that a kill at any point of a save loses nothing (tests/robustness).
CRASH_ENV = "DEEPCLUST_TEST_KILL_AT_CHECKPOINT_OP"

log = logging.getLogger("deepclust.train")


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata() or {}


_ops_done = 0


def _op_done() -> None:
    """Count one file operation of a checkpoint save; the test hook may kill the process here."""
    global _ops_done
    _ops_done += 1
    if os.environ.get(CRASH_ENV) == str(_ops_done):
        os.kill(os.getpid(), signal.SIGKILL)


# --- optimiser state <-> tensors + JSON -----------------------------------------------
def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"optimizer state value of type {type(value).__name__} cannot be stored as JSON")


def optimizer_state_to_safetensors(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split `optimizer.state_dict()` into tensors ("state.<param id>.<key>") and a JSON-able
    dict holding the non-tensor per-parameter state and the param groups."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state_dict["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = _jsonable(value)
    meta = {"state": scalars, "param_groups": [_jsonable(g) for g in state_dict["param_groups"]]}
    return tensors, meta


def optimizer_state_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """Inverse of `optimizer_state_to_safetensors` -> a dict for `optimizer.load_state_dict`."""
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = tensor
    for pid, values in meta.get("state", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        # torch keeps tuples (e.g. AdamW betas) in groups; JSON turned them into lists
        groups.append({k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()})
    return {"state": state, "param_groups": groups}


# --- RNG states as JSON ----------------------------------------------------------------
def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.cpu().numpy().tobytes()).decode()


def _unb64(s: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8).clone()


def get_rng_states() -> dict[str, Any]:
    """Python, numpy (global) and torch (CPU + every CUDA device) RNG states, JSON-able."""
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    out = {
        "python": [py_state[0], list(py_state[1]), py_state[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "torch": _b64(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(_unb64(states["torch"]))
    if "cuda" in states and torch.cuda.is_available():
        cuda_states = [_unb64(s) for s in states["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# --- checkpoints ---------------------------------------------------------------------
def model_tensors(method: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """method.state_dict() plus method.state_extra(): tensors, and the JSON-able rest."""
    tensors = dict(method.state_dict())
    json_extra: dict[str, Any] = {}
    state_extra = getattr(method, "state_extra", None)
    extra: dict[str, Any] = state_extra() if callable(state_extra) else {}
    for key, value in extra.items():
        if isinstance(value, torch.Tensor):
            tensors[EXTRA_PREFIX + key] = value
        elif isinstance(value, np.ndarray):
            tensors[EXTRA_PREFIX + key] = torch.from_numpy(np.ascontiguousarray(value))
        else:
            json_extra[key] = _jsonable(value)
    return tensors, json_extra


def load_model_tensors(method: torch.nn.Module, path: Path, json_extra: dict[str, Any] | None = None) -> None:
    tensors = load_file(str(path))
    weights = {k: v for k, v in tensors.items() if not k.startswith(EXTRA_PREFIX)}
    extra: dict[str, Any] = {k[len(EXTRA_PREFIX):]: v for k, v in tensors.items() if k.startswith(EXTRA_PREFIX)}
    extra.update(json_extra or {})
    missing, unexpected = method.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ModelNotAvailableError(
            f"{path} does not match the {type(method).__name__} built from config.json "
            f"(missing {missing[:5]}, unexpected {unexpected[:5]}): was the run made with another version?"
        )
    load_extra = getattr(method, "load_state_extra", None)
    if extra and callable(load_extra):
        load_extra(extra)


def save_checkpoint(
    run_dir: Path,
    *,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: dict[str, Any],
    epoch: int,
    step: int,
    rng: Any,
    extra: dict[str, Any] | None = None,
) -> str:
    """Write a complete checkpoint generation after `epoch` epochs, switch `latest` to it,
    then delete older generations (see the module doc). Returns its id."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_id = f"{epoch}-{step}-{uuid.uuid4().hex[:12]}"
    name = f"{GENERATION_PREFIX}{ckpt_id}"
    tmp = run_dir / f".{name}.tmp"
    tmp.mkdir()
    atomic_write_json(tmp / CONFIG_FILE, config, sort_keys=True)
    _op_done()
    weights, json_extra = model_tensors(method)
    atomic_save_safetensors(tmp / MODEL_FILE, weights, {"checkpoint_id": ckpt_id, "format": "deepclust-run"})
    _op_done()
    opt_tensors, opt_meta = optimizer_state_to_safetensors(optimizer.state_dict())
    atomic_save_safetensors(tmp / OPTIMIZER_FILE, opt_tensors, {"checkpoint_id": ckpt_id})
    _op_done()
    state = {
        "checkpoint_id": ckpt_id,
        "epoch": epoch,          # epochs completed
        "step": step,            # global optimisation steps done
        "optimizer": opt_meta,
        "method_extra": json_extra,
        "rng": rng,
        "extra": extra or {},
    }
    atomic_write_json(tmp / STATE_FILE, state, sort_keys=True)
    _op_done()
    os.replace(tmp, run_dir / name)
    fsync_dir(run_dir)
    _op_done()
    atomic_symlink(run_dir / LATEST, name)
    _op_done()
    _link_top_level(run_dir)
    _prune(run_dir, keep=name)
    _op_done()
    return ckpt_id


def _link_top_level(run_dir: Path) -> None:
    """config.json, model.safetensors, ... -> latest/<file> (created once; never regular files)."""
    for file in FILES:
        link = run_dir / file
        if not link.is_symlink():
            if link.exists():
                link.unlink()
            atomic_symlink(link, f"{LATEST}/{file}")


def _prune(run_dir: Path, keep: str) -> None:
    for entry in run_dir.iterdir():
        stem = entry.name.lstrip(".")
        if entry.name != keep and stem.startswith(GENERATION_PREFIX) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
    fsync_dir(run_dir)


def _complete(gen: Path) -> tuple[dict[str, Any] | None, str]:
    """(state.json, "") of a complete generation, else (None, why not)."""
    try:
        state = json.loads((gen / STATE_FILE).read_text())
        json.loads((gen / CONFIG_FILE).read_text())
        for name in (MODEL_FILE, OPTIMIZER_FILE):
            if _metadata(gen / name).get("checkpoint_id") != state["checkpoint_id"]:
                return None, f"{name} does not belong to {STATE_FILE} (id {state['checkpoint_id']})"
    except FileNotFoundError as exc:
        return None, f"{Path(str(exc.filename)).name} is missing"
    except Exception as exc:  # noqa: BLE001 - truncated JSON / safetensors, wrong types: all "damaged"
        return None, f"damaged ({type(exc).__name__}: {str(exc)[:120]})"
    if not isinstance(state, dict) or not {"epoch", "step", "rng", "optimizer"} <= set(state):
        return None, f"{STATE_FILE} lacks epoch/step/rng/optimizer"
    return state, ""


def _generations(run_dir: Path) -> list[Path]:
    """Generation folders, newest first (by epoch and step in their names)."""
    def key(path: Path) -> tuple[int, int]:
        parts = path.name[len(GENERATION_PREFIX):].split("-")
        try:
            return int(parts[0]), int(parts[1])
        except (IndexError, ValueError):
            return -1, -1
    found = [p for p in run_dir.glob(f"{GENERATION_PREFIX}*") if p.is_dir()]
    return sorted(found, key=key, reverse=True)


def find_checkpoint(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """(generation folder, its state.json) of the checkpoint to use, or None when the folder
    holds none. ModelNotAvailableError when generations exist but none is complete, or for
    a run written with the flat layout of earlier versions."""
    run_dir = Path(run_dir)
    problems: list[str] = []
    candidates = _generations(run_dir)
    pointed = run_dir / LATEST
    if pointed.is_dir():
        target = pointed.resolve()
        candidates = [target] + [c for c in candidates if c.resolve() != target]
    for gen in candidates:
        state, why = _complete(gen)
        if state is not None:
            if problems:
                log.warning("checkpoint %s: %s; using the complete one in %s", run_dir, "; ".join(problems), gen.name)
            return gen, state
        problems.append(f"{gen.name}: {why}")
    if problems:
        raise ModelNotAvailableError(
            f"no complete checkpoint in {run_dir}: {'; '.join(problems)}. The files are damaged (copied "
            "partially, or a disk error); retrain, or restore the folder from a backup")
    if (run_dir / STATE_FILE).is_file() and not (run_dir / STATE_FILE).is_symlink():
        raise ModelNotAvailableError(
            f"{run_dir} holds a checkpoint in the flat layout of an earlier deepclust version, which this "
            "version does not load (the weights' names changed too): retrain the run")
    return None


def prune_stale(run_dir: str | Path) -> None:
    """Delete generations other than the one in use, and half-written ones (left by a kill
    between the `latest` switch and the pruning, or during a save)."""
    found = find_checkpoint(run_dir)
    if found is not None:
        _prune(Path(run_dir), keep=found[0].name)


def has_checkpoint_files(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds anything checkpoint-like (complete or not)."""
    run_dir = Path(run_dir)
    return bool(_generations(run_dir)) or (run_dir / STATE_FILE).exists() or (run_dir / LATEST).is_symlink()


def read_state(run_dir: str | Path) -> dict[str, Any] | None:
    """state.json of the checkpoint to use (see `find_checkpoint`), or None when there is none yet."""
    found = find_checkpoint(run_dir)
    return None if found is None else found[1]


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """config.json of the checkpoint to use; ModelNotAvailableError when there is none."""
    found = find_checkpoint(run_dir)
    if found is None:
        raise ModelNotAvailableError(f"no checkpoint in {run_dir}: it is not a training run (train one with "
                                     "`deepclust train`)")
    config = json.loads((found[0] / CONFIG_FILE).read_text())
    if not isinstance(config, dict):
        raise ModelNotAvailableError(f"{found[0] / CONFIG_FILE} is not a JSON object")
    return config


def load_checkpoint(
    run_dir: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (+ optimiser state) of the checkpoint to use in `run_dir`; returns state.json."""
    found = find_checkpoint(run_dir)
    if found is None:
        raise ModelNotAvailableError(f"no complete checkpoint in {run_dir} (no {GENERATION_PREFIX}* folder)")
    gen, state = found
    load_model_tensors(method, gen / MODEL_FILE, state.get("method_extra"))
    if optimizer is not None:
        tensors = load_file(str(gen / OPTIMIZER_FILE))
        optimizer.load_state_dict(optimizer_state_from_safetensors(tensors, state["optimizer"]))
    return state
