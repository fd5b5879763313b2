"""Frozen dataclasses from parsed TOML, with every value type-checked against its annotation.

Generic over the dataclasses (a new config field needs no parser code): ``int``, ``float``,
``str``, ``bool``, ``Literal[...]`` choices, ``tuple[X, ...]`` and ``tuple[X, Y]`` lists, ``X |
None`` (absent = None) and nested dataclasses (tables). An unknown key or a wrong type is a
:class:`ConfigError` whose message names the dotted key. No TensorFlow, no Optuna.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from typing import Any, Literal

__all__ = ["ConfigError", "build_dataclass", "parse_assignment"]


class ConfigError(ValueError):
    """A study configuration is invalid; the message names the offending key."""


def _optional_of(tp: Any) -> Any:
    """``X`` for a field typed ``X | None`` (absent from the TOML = None), else None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return args[0]
    return None


def _type_name(tp: Any) -> str:
    inner = _optional_of(tp)
    if inner is not None:
        return _type_name(inner)
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} {_type_name(args[0])}"
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, str(tp))


def _coerce(value: Any, tp: Any, key: str) -> Any:
    inner = _optional_of(tp)
    if inner is not None:
        return None if value is None else _coerce(value, inner, key)
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: unknown value {value!r} (choose from "
                              f"{', '.join(map(str, allowed))})")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            if not value:
                raise ConfigError(f"{key}: must not be empty")
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {_type_name(tp)} [low, high], got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected a boolean, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be finite, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - programming error


def _build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a table, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        shown = unknown[0] if unknown[0].isidentifier() else repr(unknown[0])
        raise ConfigError(
            f"{where}{shown}: unknown key (known keys{' in [' + prefix + ']' if prefix else ''}: "
            f"{', '.join(names)})"
        )
    kwargs = {}
    for name in names:
        if name not in raw:
            continue
        key = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, raw[name], key)
        else:
            kwargs[name] = _coerce(raw[name], tp, key)
    return cls(**kwargs)


def build_dataclass(cls: type, raw: Any) -> Any:
    """An instance of the dataclass ``cls`` from a TOML document (missing keys: defaults)."""
    return _build(cls, raw, "")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` (``--set``) as ``(dotted key, value)``.

    The value is read as a TOML value (``5``, ``0.5``, ``true``, ``[0, 10]``, ``"sum"``); text
    that is not TOML is taken as a string, so ``data.dataset=text`` works unquoted. The
    override is type-checked like the TOML when it is applied.
    """
    dotted, sep, value_text = text.partition("=")
    dotted = dotted.strip()
    if not sep or not dotted or any(not part.isidentifier() for part in dotted.split(".")):
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. train.epochs=10")
    try:
        value = tomllib.loads(f"v = {value_text.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = value_text.strip()
    return dotted, value
