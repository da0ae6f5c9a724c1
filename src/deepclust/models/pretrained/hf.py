"""Finding and loading Hugging Face models without ever hanging.

``hf:<hub id>`` (``hf:facebook/dinov2-small``, ``hf:openai/clip-vit-base-patch32``) or
``hf:<local dir>`` (a ``save_pretrained`` layout: ``config.json``, ``model.safetensors``,
``preprocessor_config.json`` and, for CLIP, the tokenizer files).

Resolution order, so that an offline machine fails in seconds instead of retrying:

1. a local directory is used as is;
2. the Hugging Face cache is asked with ``local_files_only=True`` (no network at all);
3. only if the model is not cached, and ``HF_HUB_OFFLINE`` is not set, the hub is asked
   with short time-outs (a few seconds for metadata) so an unreachable network fails fast.

Every failure becomes a :class:`~deepclust.errors.ModelNotAvailableError` whose message
names the model, the command that downloads it and where to put it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from deepclust.errors import ModelNotAvailableError

INSTALL_HINT = "pip install 'deepclust[pretrained]'"

# Only what we load: configs, tokenizer files, safetensors weights (never pickled .bin).
ALLOW_PATTERNS = ["*.json", "*.txt", "*.safetensors"]

# Seconds for the metadata request when the model is not cached; overridable by the user's
# own HF_HUB_ETAG_TIMEOUT. Short on purpose: a machine without network must fail fast.
DEFAULT_ETAG_TIMEOUT = 5.0
DEFAULT_DOWNLOAD_TIMEOUT = 30.0

# Files only a deepclust training run directory has (never a Hugging Face model folder).
RUN_FILES = ("state.json", "log.csv", "optimizer.safetensors")


def require_transformers():
    """Import and return ``transformers``, or raise a clear install hint."""
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ModelNotAvailableError(
            f"pretrained models need the optional 'transformers' package ({exc}). "
            f"Install it with: {INSTALL_HINT}") from exc
    return transformers


def strip_prefix(spec: str) -> str:
    """``"hf:facebook/dinov2-small"`` -> ``"facebook/dinov2-small"``."""
    name = spec[3:] if spec.startswith("hf:") else spec
    if not name.strip():
        raise ModelNotAvailableError(
            "empty model name: use hf:<hub id> (e.g. hf:facebook/dinov2-small) or hf:/path/to/dir")
    return name.strip()


def _looks_like_path(name: str) -> bool:
    # Hub ids are "owner/name"; anything else that exists on disk, or is clearly a path, is one.
    return (name.startswith(("/", "./", "../", "~")) or name.count("/") > 1
            or Path(name).expanduser().exists())


def offline_message(name: str, reason: str) -> str:
    """The message for a model that cannot be found: what to download and where to put it."""
    from_cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join("~", ".cache", "huggingface")), "hub")
    return (
        f"pretrained model '{name}' is not available: {reason}.\n"
        f"  On a machine with internet, download it with\n"
        f"      huggingface-cli download {name}\n"
        f"  (`hf download {name}` with huggingface_hub >= 1.0, or in Python:\n"
        f"  huggingface_hub.snapshot_download('{name}')),\n"
        f"  then either copy the Hugging Face cache to {from_cache} on this machine, or save it\n"
        f"  to a folder (snapshot_download('{name}', local_dir='models/{name.split('/')[-1]}'))\n"
        f"  and pass --model hf:/path/to/that/folder.")


def _hub_timeouts() -> None:
    """Make hub requests give up quickly unless the user asked for something else.

    huggingface_hub reads these variables at import time, so the module constants are set
    too (when the user has not set the variable)."""
    try:
        import huggingface_hub.constants as constants
    except ImportError:  # pragma: no cover
        return
    for var, default in (("HF_HUB_ETAG_TIMEOUT", DEFAULT_ETAG_TIMEOUT),
                         ("HF_HUB_DOWNLOAD_TIMEOUT", DEFAULT_DOWNLOAD_TIMEOUT)):
        if var not in os.environ:
            os.environ[var] = str(int(default))
            if hasattr(constants, var):
                setattr(constants, var, default)


def _offline_requested() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def resolve_model_dir(spec: str) -> Path:
    """A local directory holding the model's files, for ``hf:<hub id or dir>``.

    Raises ModelNotAvailableError (fast) when the model is neither local nor cached and
    cannot be downloaded.
    """
    name = strip_prefix(spec)
    if _looks_like_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise ModelNotAvailableError(
                f"model folder '{path}' does not exist. Pass hf:<hub id> (e.g. "
                f"hf:facebook/dinov2-small) or hf:<folder written by save_pretrained>.")
        if not (path / "config.json").is_file():
            raise ModelNotAvailableError(
                f"model folder '{path}' has no config.json; it must be a save_pretrained / "
                f"snapshot_download folder (config.json, model.safetensors, preprocessor_config.json).")
        return path
    require_transformers()
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover
        raise ModelNotAvailableError(f"huggingface_hub is missing ({exc}); {INSTALL_HINT}") from exc
    try:
        return Path(snapshot_download(name, local_files_only=True, allow_patterns=ALLOW_PATTERNS))
    except Exception:  # noqa: BLE001 - any cache miss falls through to the network
        pass
    if _offline_requested():
        raise ModelNotAvailableError(offline_message(name, "it is not in the local Hugging Face "
                                                           "cache and HF_HUB_OFFLINE is set"))
    _hub_timeouts()
    try:
        path = Path(snapshot_download(name, allow_patterns=ALLOW_PATTERNS,
                                      etag_timeout=float(os.environ["HF_HUB_ETAG_TIMEOUT"])))
    except Exception as exc:  # noqa: BLE001 - network, auth, missing repo: all user-fixable
        raise ModelNotAvailableError(offline_message(
            name, f"it is not cached and could not be downloaded ({type(exc).__name__}: "
                  f"{str(exc).splitlines()[0] if str(exc) else 'no details'})")) from exc
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(offline_message(name, "the download has no config.json"))
    return path


def is_hf_model_dir(spec: str | Path) -> bool:
    """A local Hugging Face model folder (``save_pretrained`` / ``hf download --local-dir``):
    its config.json has ``model_type`` or ``architectures`` and the folder holds no
    deepclust run files (``state.json``, ``log.csv``, ``optimizer.safetensors``)."""
    try:
        path = Path(spec).expanduser()
        config = path / "config.json"
        if not config.is_file() or any((path / f).exists() for f in RUN_FILES):
            return False
        data = read_json(config)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and ("model_type" in data or "architectures" in data)


def read_json(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def model_type(model_dir: Path) -> str:
    """``config.json``'s ``model_type`` (``dinov2``, ``clip``, ...)."""
    return str(read_json(model_dir / "config.json").get("model_type", "")).lower()


def check_weights(model_dir: Path, name: str) -> None:
    if not any(model_dir.glob("*.safetensors")):
        raise ModelNotAvailableError(offline_message(
            name, f"'{model_dir}' holds no *.safetensors weights (only safetensors are loaded, "
                  f"never pickled .bin files)"))
