"""Command-line flags derived from config dataclasses (see `models.options`).

Each field declared with `option(...)` becomes one flag: `--field-name` (or the option's
`flag`), its type from the annotation, choices from a Literal (or the option), bounds
checked as the flag is parsed, the default and help shown in `--help`. A nested config
becomes an argument group. Flags default to "not given", so the caller can tell what the
user typed from what a preset or a default supplied.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from models.options import Option, choices_of, option_of, type_hints
from training.config import nested_configs, setting_names


def flag_name(f: dataclasses.Field[Any]) -> str:
    meta = option_of(f)
    return meta.flag if meta is not None and meta.flag else "--" + f.name.replace("_", "-")


def add_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    defaults: Mapping[str, Any] | None = None,
) -> None:
    """Add a flag per option field of `cls`; `defaults` overrides the defaults shown."""
    defaults = defaults or {}
    nested = nested_configs(cls)
    for f in dataclasses.fields(cls):
        if f.name in nested:
            sub = nested[f.name]
            doc = (sub.__doc__ or "").strip().splitlines()[0]
            if isinstance(parser, argparse.ArgumentParser):
                add_flags(parser.add_argument_group(f"{f.name}: {doc}"), sub, defaults)
            else:
                add_flags(parser, sub, defaults)
            continue
        meta = option_of(f)
        if meta is not None:
            _add_flag(parser, cls, f, meta, defaults.get(f.name, f.default))


def _add_flag(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    f: dataclasses.Field[Any],
    meta: Option,
    default: Any,
) -> None:
    name = flag_name(f)
    kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
    if default is dataclasses.MISSING:
        parser.add_argument(name, required=True, type=_value_type(cls, f), help=meta.help, **kw)
        return
    hint = _plain(type_hints(cls)[f.name])
    if hint is bool:
        action = "store_false" if default else "store_true"
        parser.add_argument(name, action=action, help=meta.help, **kw)
        return
    if typing.get_origin(hint) is tuple:
        kw["nargs"] = "*"
        kw["metavar"] = "TOKEN"
    choices = choices_of(cls, f)
    if choices is not None:
        kw["choices"] = choices
    shown = "none" if default is None or default == () else default
    parser.add_argument(
        name, type=_value_type(cls, f), help=f"{meta.help} (default: {shown})", **kw
    )


def _plain(hint: Any) -> Any:
    """`X | None` -> X: an optional setting's flag takes a value of X."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _value_type(cls: type, f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    hint = _plain(type_hints(cls)[f.name])
    if typing.get_origin(hint) is tuple:
        hint = typing.get_args(hint)[0]
    if typing.get_origin(hint) is typing.Literal:
        hint = type(typing.get_args(hint)[0])
    kind: Callable[[str], Any] = hint if hint in (int, float, str, Path) else str
    meta = option_of(f)

    def parse(text: str) -> Any:
        value = kind(text)  # ValueError: argparse reports "invalid <name> value"
        problem = meta.violation(value) if meta is not None else None
        if problem:
            raise argparse.ArgumentTypeError(f"{problem}, got {text}")
        return value

    parse.__name__ = getattr(kind, "__name__", "value")
    return parse


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The settings of `cls` (nested ones included) that the command line gave explicitly."""
    values = {k: v for k, v in vars(args).items() if k in setting_names(cls)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def flags_by_setting(cls: type) -> dict[str, str]:
    """Setting name -> its flag, nested configs included (for error messages)."""
    nested = nested_configs(cls)
    names: dict[str, str] = {}
    for f in dataclasses.fields(cls):
        if f.name in nested:
            names |= flags_by_setting(nested[f.name])
        else:
            names[f.name] = flag_name(f)
    return names
