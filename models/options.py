"""Config fields that carry their own documentation and bounds.

A field declared as `lr: float = option(1.0, "learning rate", gt=0)` is one definition
read three ways: the dataclass default, `check(config)` (called by the config's
`__post_init__`, so a bad value fails where the config is built), and, in `training/`,
the command-line flag `--lr` with its type, default, help, choices and bounds. Adding a
hyper-parameter is then one line in one dataclass.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import typing
from dataclasses import dataclass
from typing import Any, Literal

KEY = "rnnlm.option"
_BOUNDS = (
    ("ge", ">=", operator.ge),
    ("gt", ">", operator.gt),
    ("lt", "<", operator.lt),
    ("le", "<=", operator.le),
)


@dataclass(frozen=True)
class Option:
    """What a field means and which values it accepts (pydantic's bound names)."""

    help: str
    ge: float | None = None
    gt: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple[Any, ...] | None = None  # when the annotation is not a Literal
    flag: str | None = None  # the command-line spelling, when it is not --field-name

    def violation(self, value: Any) -> str | None:
        """Why `value` is out of bounds, or None when it is fine."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        if not math.isfinite(value):
            return "must be a finite number"
        for bound, text, holds in _BOUNDS:
            limit = getattr(self, bound)
            if limit is not None and not holds(value, limit):
                return f"must be {text} {limit:g}"
        return None


def option(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: tuple[Any, ...] | None = None,
    flag: str | None = None,
) -> Any:
    """A dataclass field with its default, help text and bounds (see the module docstring).

    `default` may be `dataclasses.MISSING`: a field every config must be given.
    """
    meta = Option(help, ge, gt, lt, le, choices, flag)
    return dataclasses.field(default=default, metadata={KEY: meta})


def option_of(f: dataclasses.Field[Any]) -> Option | None:
    meta = f.metadata.get(KEY)
    return meta if isinstance(meta, Option) else None


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a dataclass (strings under `from __future__ import
    annotations`), cached: they never change."""
    return typing.get_type_hints(cls)


def choices_of(cls: type, f: dataclasses.Field[Any]) -> tuple[Any, ...] | None:
    """A field's allowed values: its option's choices, or the values of a Literal type."""
    meta = option_of(f)
    if meta is not None and meta.choices is not None:
        return meta.choices
    hint = type_hints(cls)[f.name]
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else None


def check(config: Any) -> None:
    """Raise ValueError naming the first field whose value is out of bounds or choices."""
    cls = type(config)
    for f in dataclasses.fields(config):
        meta = option_of(f)
        if meta is None:
            continue
        value = getattr(config, f.name)
        problem = meta.violation(value)
        choices = choices_of(cls, f)
        if problem is None and choices is not None and value not in choices:
            problem = f"must be one of {', '.join(map(str, choices))}"
        if problem is not None:
            raise ValueError(f"{f.name} {problem}, got {value!r}")
