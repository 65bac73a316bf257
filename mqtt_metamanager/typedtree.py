"""A nested mapping (YAML plus environment text) into frozen dataclasses, by their type
hints: every value checked against its key's type, unknown keys refused, and the failing
key's dotted path at the start of every error. ``config.py`` says what the keys are."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "METAMANAGER_"


class ConfigError(ValueError):
    """A config problem; the message starts with the offending key path."""


class EnvText(str):
    """A value from the environment: text, read by the type of the key it sets."""


_ENV_BOOLS = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _from_env(path: str, text: EnvText, typ: Any) -> Any:
    """Environment text by the key's type: strings stay as written (no YAML surprises
    such as 0123 turning octal), numbers and booleans are parsed strictly."""
    if typ is bool:
        if text.strip().lower() not in _ENV_BOOLS:
            raise ConfigError(f"{path}: must be true or false, got {str(text)!r}")
        return _ENV_BOOLS[text.strip().lower()]
    try:
        if typ is int:
            return int(text.strip())
        if typ is float:
            return float(text.strip())
    except ValueError:
        kind = "an integer" if typ is int else "a number"
        raise ConfigError(f"{path}: must be {kind}, got {str(text)!r}") from None
    return str(text)


def _coerce(path: str, value: Any, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if isinstance(value, EnvText) and typ in (bool, int, float, str):
        return _from_env(path, value, typ)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: must be a mapping")
        return build(typ, value, path)
    if origin is list:
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: must be a list of strings")
        return list(value)
    if typ is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: must be true or false, got {value!r}")
        return value
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: must be an integer, got {value!r}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: must be a number, got {value!r}")
        return float(value)
    if typ is str:
        if value is None:
            return ""
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{path}: must be a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{path}: unsupported type {typ}")  # a bug in this module


def build(cls: Any, data: Mapping[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"{prefix}{'.' if prefix else ''}{key}: unknown key")
    kwargs = {}
    for name in names:
        if name in data:
            path = f"{prefix}{'.' if prefix else ''}{name}"
            typ = hints[name]
            if isinstance(typ, types.UnionType):  # pragma: no cover - no optional keys today
                typ = typing.get_args(typ)[0]
            kwargs[name] = _coerce(path, data[name], typ)
    return cls(**kwargs)


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """``METAMANAGER_MQTT__HOST=x`` -> ``{"mqtt": {"host": "x"}}``; a list key takes
    ``a,b``; every other value is read by its key's type (``_from_env``)."""
    tree: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        if not all(parts):
            raise ConfigError(f"{name}: not a config key path")
        value = EnvText(raw)
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: conflicts with another variable")
        node[parts[-1]] = value
    return tree


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(dict(out[key]), value)
        else:
            out[key] = value
    return out
