"""Command-line flags generated from the library's config dataclasses, so that a default
is written once (in the dataclass) and a flag can never drift from the field it sets."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

from jaxprune.errors import UserError


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(the non-None type, optional?) of an annotation such as ``float | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return tp, False


def add_dataclass_args(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    required: Iterable[str] = (),
    defaults: dict[str, Any] | None = None,
) -> None:
    """Add one flag per field of dataclass ``cls`` (``seq_len`` -> ``--seq-len``) with the
    field's type (or ``metadata["parse"]``), default, ``metadata["help"]`` and
    ``metadata["choices"]``. ``only`` picks fields; ``required`` fields get no default;
    ``defaults`` overrides a default for this command only."""
    hints = typing.get_type_hints(cls)
    wanted = None if only is None else list(only)
    required = set(required)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in wanted or list(fields):
        f = fields[name]
        tp, optional = _base_type(hints[name])
        kw: dict[str, Any] = {"help": f.metadata.get("help", ""), "dest": name}
        if name in required:
            kw["required"] = True
            kw["default"] = argparse.SUPPRESS  # no "(default: None)" in --help
        else:
            kw["default"] = (defaults or {}).get(name, _default(f))
        if "choices" in f.metadata:
            kw["choices"] = tuple(f.metadata["choices"])
        if "parse" in f.metadata:
            kw["type"] = _argtype(f.metadata["parse"])
        elif tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif tp in (int, float, str):
            kw["type"] = tp
        else:
            raise TypeError(f"{cls.__name__}.{name}: no flag type for {hints[name]}")
        if name not in required and kw["default"] is None and not optional:
            raise TypeError(f"{cls.__name__}.{name}: no default")
        parser.add_argument(_flag(name), **kw)


def _argtype(parse):
    """An argparse type from a field's ``metadata["parse"]`` (its UserError becomes a usage
    error naming the flag)."""

    def convert(text: str):
        try:
            return parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides):
    """``cls(**{field: args.field})`` for every field the parser set, plus ``overrides``."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: getattr(args, k) for k in names if hasattr(args, k)}
    return cls(**{**values, **overrides})
