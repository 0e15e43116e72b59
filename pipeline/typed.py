"""Build typed dataclasses from plain YAML data, naming the field on every error.

A config is validated entirely before any work starts: an unknown key, a value
of the wrong type or a value a stage refuses (its __post_init__ raises
ValueError("field: why")) becomes a ConfigError whose message starts with the
dotted path of the field, e.g. `stages.split.min_clip_s: must be > 0 (got -1)`.

Every float must be finite: YAML's `.inf` and `.nan` pass `x > 0` checks and
then crash a run midway. A field that means something by infinity opts in
with `field(metadata={NON_FINITE: True})`.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Literal, Union


NON_FINITE = "non_finite"  # dataclass field metadata: this float field accepts .inf/.nan


class ConfigError(ValueError):
    """A config value that can't be used; the message names the field."""


def build(cls: type, data: Any, path: str) -> Any:
    """Construct dataclass `cls` from mapping `data`; `path` prefixes error messages."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping, got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"{_join(path, key)}: unknown key (known keys: {known})")
    hints = typing.get_type_hints(cls)
    kwargs = {name: coerce(hints[name], value, _join(path, name), not fields[name].metadata.get(NON_FINITE))
              for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as err:  # the class's own checks name the field first
        raise ConfigError(f"{_join(path, str(err))}") from None


def coerce(hint: Any, value: Any, path: str, finite: bool = True) -> Any:
    """Check `value` against type `hint`, converting only where no information is lost (int → float);
    floats must be finite unless `finite` is False."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return coerce(option, value, path, finite)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} matches none of {hint}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{path}: must be one of {', '.join(map(repr, args))} (got {value!r})")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        item = args[0] if args else Any
        items = [coerce(item, v, f"{path}[{i}]", finite) for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return {str(k): coerce(args[1], v, _join(path, str(k)), finite) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return value if isinstance(value, hint) else build(hint, value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        if finite and not math.isfinite(value):
            raise ConfigError(f"{path}: must be a finite number (got {value!r})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"{path}: unsupported config type {hint!r}")


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config (for run.json and hashing)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
