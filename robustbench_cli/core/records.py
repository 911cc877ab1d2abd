"""Typed records that read and write plain data (JSON, TOML): the one place that turns dicts into objects.

A record is a dataclass. :func:`to_data` writes it as plain dicts and lists, keys in field order; :func:`from_data`
reads one back, checking every value against the field's type and naming the key that is wrong (``data.n: expected
an integer, got 'five'``). Field metadata tunes the mapping:

- ``key``: the name in the data when it differs from the field's (``"from"``, say);
- ``omit_none``: leave the key out when the value is None (optional parts of a report);
- ``omit_with``: leave the key out when the named other field is None (keys that come as a group);
- ``extra``: a ``dict`` field that collects every key the record does not know, written back in place (so a report
  written by a newer version keeps its new fields when read and written by this one).

Specs (the scan's configuration) are frozen records read with ``strict=True``: an unknown key is an error, not a
setting silently ignored.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from robustbench_cli.core.errors import UserError

R = TypeVar("R")


def to_data(obj: Any) -> Any:
    """A record, list, tuple or dict as plain data (records become dicts, tuples lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if f.metadata.get("extra"):
                out.update(to_data(v or {}))
            elif not (f.metadata.get("omit_none") and v is None) \
                    and not ("omit_with" in f.metadata and getattr(obj, f.metadata["omit_with"]) is None):
                out[f.metadata.get("key", f.name)] = to_data(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    return obj


def from_data(cls: type[R], data: Any, *, strict: bool = False, where: str = "") -> R:
    """Read a record of type ``cls`` from plain data, checking types; errors name the key (``where``)."""
    if not isinstance(data, dict):
        raise UserError(f"{where or cls.__name__}: expected a table of keys, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    by_key = {f.metadata.get("key", f.name): f for f in fields if not f.metadata.get("extra")}
    extra_field = next((f for f in fields if f.metadata.get("extra")), None)
    kwargs: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in data.items():
        f = by_key.get(key)
        if f is None:
            if extra_field is not None:
                extra[key] = value
                continue
            if strict:
                known = ", ".join(by_key)
                raise UserError(f"{_at(where, key)}: unknown key (known: {known})")
            continue
        kwargs[f.name] = _convert(hints[f.name], value, _at(where, key), strict)
    if extra_field is not None:
        kwargs[extra_field.name] = extra
    missing = [k for k, f in by_key.items() if f.name not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise UserError(f"{where or cls.__name__}: missing {', '.join(missing)}")
    return cls(**kwargs)


_PRIMITIVE = {  # item types of long lists, and the exact check that lets a value through unconverted
    int: lambda x: type(x) is int,
    bool: lambda x: type(x) is bool,
    str: lambda x: type(x) is str,
    float | None: lambda x: x is None or (type(x) is float and math.isfinite(x)),
    str | None: lambda x: x is None or type(x) is str,
}


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _kind(v: Any) -> str:
    return "null" if v is None else f"{type(v).__name__} {v!r}"[:80]


def _convert(tp: Any, v: Any, where: str, strict: bool) -> Any:
    """``v`` as a value of type ``tp``, or a UserError naming ``where``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(a, v, where, strict)
            except UserError as e:
                errors.append(str(e))
        raise UserError(errors[0] if len(errors) == 1 else f"{where}: expected {_type_text(tp)}, got {_kind(v)}")
    if tp is Any or tp is object:
        return v
    if dataclasses.is_dataclass(tp):
        return from_data(typing.cast(type, tp), v, strict=strict, where=where)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        if not isinstance(v, (list, tuple)):
            raise UserError(f"{where}: expected a list, got {_kind(v)}")
        item: Any = args[0] if args else Any
        fast = _PRIMITIVE.get(item)
        if fast is not None and all(fast(x) for x in v):  # long per-sample columns: one pass, no per-item calls
            out = list(v)
            return tuple(out) if origin is tuple else out
        out = [_convert(item, x, f"{where}[{i}]", strict) for i, x in enumerate(v)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            raise UserError(f"{where}: expected a table, got {_kind(v)}")
        return dict(v)
    if tp is bool:
        if not isinstance(v, bool):
            raise UserError(f"{where}: expected true or false, got {_kind(v)}")
        return v
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise UserError(f"{where}: expected an integer, got {_kind(v)}")
        return v
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise UserError(f"{where}: expected a number, got {_kind(v)}")
        return float(v) if math.isfinite(v) or not strict else _finite(v, where)
    if tp is str:
        if not isinstance(v, str):
            raise UserError(f"{where}: expected a string, got {_kind(v)}")
        return v
    return v


def _finite(v: float, where: str) -> float:
    raise UserError(f"{where}: expected a finite number, got {v!r}")


def _type_text(tp: Any) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(names.get(a, getattr(a, "__name__", str(a))) for a in args)
