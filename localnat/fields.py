"""Typed options: a config field that carries its flag, help text, choices and what a change
of it changes, checked against its annotation when the config is built. The CLI flags,
config-file keys and the README options table derive from these fields (`localnat.options`);
the resume identity and the cache namespace derive from `affects` (`declared`). Values are
type-checked, never coerced: a string "false" where a boolean belongs is an error naming the
option.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import field, fields

# What an option can change, declared on its field (`option(affects=...)`): the one list the
# resume identity, the cache namespace and a complete run's answer derive from
# (docs/method.md §10). Options that declare none change speed, placement or logging only.
SCORES = "scores"  # a row's scores: the cache namespace and the run identity
ROWS = "rows"  # which rows are scored, rejected or committed together: the run identity
CHOICE = "choice"  # what is chosen and reported from the scores: a complete run chooses again


class OptionError(ValueError):
    """An option value of the wrong type or out of range; the message names the option."""


def option(
    default,
    help: str,
    *,
    group: str,
    flag: str | None = None,
    choices=None,
    default_text: str | None = None,
    metavar: str | None = None,
    affects: str | None = None,
):
    """A config field with what the CLI, config files and the README need to know about it.

    `flag` overrides the flag/key name (default: the field name with dashes); `default_text`
    says what a None default means (a policy, e.g. "2048 CPU / 32768 CUDA"); `affects`:
    SCORES, ROWS or CHOICE, what a change of it changes (None: none of them)."""
    assert affects in (None, SCORES, ROWS, CHOICE), affects
    meta = {
        "affects": affects,
        "help": help,
        "group": group,
        "flag": flag,
        "choices": choices,
        "default_text": default_text,
        "metavar": metavar,
    }
    return field(default=default, metadata=meta)


def declared(obj, kinds: tuple[str, ...]) -> dict:
    """The fields of a config dataclass whose `affects` is one of `kinds`: name -> value."""
    return {f.name: getattr(obj, f.name) for f in fields(obj) if f.metadata.get("affects") in kinds}


def flag_name(f) -> str:
    return f.metadata.get("flag") or f.name.replace("_", "-")


def flag_names(*owners) -> dict[str, str]:
    """Field name -> its flag's name, over the config dataclasses `owners`."""
    return {f.name: flag_name(f) for owner in owners for f in fields(owner)}


def check_fields(obj) -> None:
    """Type-check every field of a config dataclass against its annotation (no coercion
    except int -> float and a scalar -> a one-element tuple); normalize tuples in place."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if "help" not in f.metadata:
            continue
        value = getattr(obj, f.name)
        checked = _check(flag_name(f), value, hints[f.name])
        if checked is not value:
            object.__setattr__(obj, f.name, checked)
        choices = f.metadata.get("choices")
        if choices and checked not in choices:
            raise OptionError(
                f"{flag_name(f)}: must be one of {', '.join(map(str, choices))}, got {checked!r}"
            )


def _check(name: str, value, hint):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        one = isinstance(value, (str, int, float)) or (
            isinstance(args[0], type) and isinstance(value, args[0])
        )
        if one and not isinstance(value, bool):  # a scalar: a one-element list
            value = (value,)
        elif not isinstance(value, (list, tuple)):
            raise OptionError(f"{name}: expected a list, got {_show(value)}")
        return tuple(_check(name, v, args[0]) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise OptionError(f"{name}: expected true or false, got {_show(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{name}: expected an integer, got {_show(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OptionError(f"{name}: expected a number, got {_show(value)}")
        if not math.isfinite(value):  # no option means anything by inf or nan
            raise OptionError(f"{name}: expected a finite number, got {value}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise OptionError(f"{name}: expected a string, got {_show(value)}")
        return value
    if hasattr(hint, "parse"):  # a value type that reads its own notations (Window)
        try:
            return hint.parse(value)
        except ValueError as err:
            raise OptionError(f"{name}: {err}") from None
    if isinstance(hint, type) and not isinstance(value, hint):
        raise OptionError(f"{name}: expected {hint.__name__}, got {_show(value)}")
    return value


def _show(value) -> str:
    return f"{type(value).__name__} {value!r}"
