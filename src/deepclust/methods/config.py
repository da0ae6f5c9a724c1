"""Typed configurations: dataclasses with defaults, checked at the boundary.

Each method declares a ``Config`` dataclass (``DINOConfig``, ``SwAVConfig``,
``DeepClusterConfig``); a recipe's ``method_kwargs`` become that dataclass through
`config_from_mapping`, which fails with a clear message on an unknown key (listing the
valid ones) or on a value of the wrong type (naming the key, the expected type and the
value). `TrainConfig` checks its own fields with the same `check_fields`.

Supported annotations: ``int``, ``float`` (ints accepted), ``bool``, ``str``, ``Any``,
``Literal[...]``, unions (``int | None``), ``tuple[float, ...]`` / ``tuple[float, float]``
(YAML lists accepted, stored as tuples) and ``dict[str, Any]``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from deepclust.errors import DeepclustError


class MethodConfigError(DeepclustError, ValueError):
    """A method or training setting that does not make sense (a ValueError for library users,
    a DeepclustError so that the CLI prints the message)."""


T = TypeVar("T")
_MISSING = object()


def type_name(tp: Any) -> str:
    """``int | None`` -> ``"int or null"``; ``tuple[float, ...]`` -> ``"a list of float"``."""
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if tp is Any:
        return "anything"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"a list of {type_name(args[0]) if args else 'values'}"
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any) -> Any:
    """``value`` checked against annotation ``tp`` (ints widened to float, lists to tuples);
    returns ``_MISSING`` when it does not fit."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if tp is type(None):
        return None if value is None else _MISSING
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            out = coerce(value, arm)
            if out is not _MISSING:
                return out
        return _MISSING
    if origin is typing.Literal:
        return value if value in typing.get_args(tp) else _MISSING
    if tp is bool:
        return value if isinstance(value, bool) else _MISSING
    if tp is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _MISSING
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return float(value) if ok else _MISSING
    if tp is str:
        return value if isinstance(value, str) else _MISSING
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return _MISSING
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis or len(args) == 1:
            arms = [args[0]] * len(value)
        elif args:
            if len(args) != len(value):
                return _MISSING
            arms = list(args)
        else:
            arms = [Any] * len(value)
        items = [coerce(v, a) for v, a in zip(value, arms)]
        return _MISSING if any(i is _MISSING for i in items) else tuple(items)
    if origin in (dict, Mapping) or tp in (dict, Mapping):
        return dict(value) if isinstance(value, Mapping) else _MISSING
    return value if isinstance(tp, type) and isinstance(value, tp) else _MISSING


def check_fields(obj: Any, where: str) -> None:
    """Check (and coerce in place) every field of the dataclass instance ``obj``."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        out = coerce(value, hints[f.name])
        if out is _MISSING:
            raise MethodConfigError(f"{where}: {f.name} must be {type_name(hints[f.name])}, "
                                    f"got {value!r} ({type(value).__name__})")
        object.__setattr__(obj, f.name, out)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def config_from_mapping(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """``cls(**values)`` after checking the keys; the types are checked by the dataclass's
    ``__post_init__`` (`TypedConfig`)."""
    values = dict(values or {})
    valid = field_names(cls)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise MethodConfigError(f"{where} does not take {unknown}; valid keys: {', '.join(valid)}")
    return cls(**values)


@dataclasses.dataclass
class TypedConfig:
    """Base of the method configs: field types are checked on construction."""

    def __post_init__(self) -> None:
        check_fields(self, type(self).__name__)


__all__ = ["MethodConfigError", "TypedConfig", "check_fields", "coerce", "config_from_mapping",
           "field_names", "type_name"]
