"""Run-directory checkpoints: safetensors for tensors, JSON for everything else.

A complete checkpoint is

    config.json            the TrainConfig (flat JSON)
    model.safetensors      method.state_dict() (+ tensors of method.state_extra() under "__extra__.")
    optimizer.safetensors  the optimiser's tensor state, flattened ("state.<param id>.<key>")
    state.json             epoch completed, global step, optimiser's non-tensor state and
                           param groups, RNG states (base64 / lists), checkpoint id

Every file is written to a temporary name in the same directory, fsync'ed and renamed
with `os.replace` (atomic on POSIX). `state.json` is written last and names the
checkpoint id that both safetensors files carry in their metadata, so a checkpoint is
complete only when state.json exists and the ids match. Nothing is loaded with pickle:
only `safetensors.torch.load_file` and `json`.
"""

from __future__ import annotations

import base64
import json
import random
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from deepclust.core.io import atomic_save_safetensors, atomic_write_json
from deepclust.errors import ModelNotAvailableError

MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"
CONFIG_FILE = "config.json"
EXTRA_PREFIX = "__extra__."


def _metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return fh.metadata() or {}


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
    """Write a complete checkpoint after `epoch` epochs (state.json last). Returns its id."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_id = f"{epoch}-{step}-{uuid.uuid4().hex[:12]}"
    atomic_write_json(run_dir / CONFIG_FILE, config, sort_keys=True)
    weights, json_extra = model_tensors(method)
    atomic_save_safetensors(run_dir / MODEL_FILE, weights, {"checkpoint_id": ckpt_id, "format": "deepclust-run"})
    opt_tensors, opt_meta = optimizer_state_to_safetensors(optimizer.state_dict())
    atomic_save_safetensors(run_dir / OPTIMIZER_FILE, opt_tensors, {"checkpoint_id": ckpt_id})
    state = {
        "checkpoint_id": ckpt_id,
        "epoch": epoch,          # epochs completed
        "step": step,            # global optimisation steps done
        "optimizer": opt_meta,
        "method_extra": json_extra,
        "rng": rng,
        "extra": extra or {},
    }
    atomic_write_json(run_dir / STATE_FILE, state, sort_keys=True)
    return ckpt_id


def read_state(run_dir: Path) -> dict[str, Any] | None:
    """state.json of a complete checkpoint, or None when there is none yet.

    Raises ModelNotAvailableError when the files belong to different checkpoints: files
    copied by hand, or a hard kill (SIGKILL, power loss) between two file replacements
    (Ctrl-C and SIGTERM are deferred until a checkpoint is complete, see interrupts.py)."""
    run_dir = Path(run_dir)
    path = run_dir / STATE_FILE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    for name in (MODEL_FILE, OPTIMIZER_FILE):
        file = run_dir / name
        if not file.is_file() or _metadata(file).get("checkpoint_id") != state["checkpoint_id"]:
            raise ModelNotAvailableError(
                f"checkpoint in {run_dir} is inconsistent: {name} does not belong to state.json "
                f"(id {state['checkpoint_id']}); restore the files from one checkpoint or start a new run"
            )
    return state


def load_checkpoint(
    run_dir: Path, method: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Load weights (+ optimiser state) of the complete checkpoint in `run_dir`; returns state.json."""
    run_dir = Path(run_dir)
    state = read_state(run_dir)
    if state is None:
        raise ModelNotAvailableError(f"no complete checkpoint in {run_dir} (state.json is missing)")
    load_model_tensors(method, run_dir / MODEL_FILE, state.get("method_extra"))
    if optimizer is not None:
        tensors = load_file(str(run_dir / OPTIMIZER_FILE))
        optimizer.load_state_dict(optimizer_state_from_safetensors(tensors, state["optimizer"]))
    return state
