"""Every `localnat curate` option, derived from the typed config fields (defined once there):
the argparse flags, the config-file keys, the merge of the two, and the README table.

Precedence: field defaults < config file < flags. A flag replaces the file's value for its
key, lists included.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import types
import typing
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

from .curate.job_config import CurateConfig
from .fields import OptionError, flag_name
from .redact import redact
from .scoring.config import ScoreConfig
from .scoring.windows import Window

GROUPS = ("input and output", "columns", "scoring", "selection", "ray")


@dataclass(frozen=True)
class Option:
    key: str  # flag and config-file key, e.g. "batch-tokens"
    field: str  # dataclass field name
    owner: type  # CurateConfig or ScoreConfig
    hint: object
    default: object
    meta: dict

    @property
    def repeatable(self) -> bool:
        return typing.get_origin(_strip_none(self.hint)) is tuple


def _strip_none(hint):
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def all_options() -> list[Option]:
    out = []
    for owner in (CurateConfig, ScoreConfig):
        hints = typing.get_type_hints(owner)
        for f in fields(owner):
            if "help" in f.metadata:
                default = f.default if f.default is not MISSING else None
                out.append(Option(flag_name(f), f.name, owner, hints[f.name], default, f.metadata))
    keys = [o.key for o in out]
    assert len(set(keys)) == len(keys), f"option keys collide: {keys}"
    return sorted(out, key=lambda o: GROUPS.index(o.meta["group"]))


class OneLineParser(argparse.ArgumentParser):
    """A usage error is one line: the option, what is wrong with it, where options are."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser(prog: str = "localnat curate") -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=prog,
        description="Score multi-teacher reasoning traces with a student's local naturalness, "
        "rank the teachers and keep the best response per prompt.",
        allow_abbrev=False,
        argument_default=argparse.SUPPRESS,  # only what was given: flags then win over a file
    )
    p.add_argument("--config", help="YAML or TOML file whose keys are these options")
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    for o in all_options():
        kw: dict = {"dest": o.key, "help": _help(o)}
        base = _strip_none(o.hint)
        if base is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif o.repeatable:
            kw.update(action="append", metavar=metavar(o))
        else:
            kw["type"] = base if base in (int, float) else str
            if o.meta.get("choices"):
                kw["choices"] = o.meta["choices"]
            else:
                kw["metavar"] = metavar(o)
        groups[o.meta["group"]].add_argument(f"--{o.key}", **kw)
    return p


def _help(o: Option) -> str:
    text = o.meta["help"].replace("`", "")
    return f"{text} (default: {default_text(o).replace('`', '')})"


def metavar(o: Option) -> str:
    if o.meta.get("metavar"):
        return o.meta["metavar"]
    return "N" if _strip_none(o.hint) in (int, float) else o.key.split("-")[-1].upper()


def default_text(o: Option) -> str:
    if o.meta.get("default_text"):
        return o.meta["default_text"]
    if isinstance(o.default, bool):
        return "on" if o.default else "off"
    if o.default is None:
        return "none"
    return f"`{o.default}`"


def read_config_file(path: str) -> dict:
    """A YAML or TOML mapping of option keys (dashes or underscores) to values."""
    text = Path(path).read_text()
    if path.endswith(".toml"):
        if sys.version_info >= (3, 11):
            import tomllib
        else:  # pragma: no cover - exercised on Python 3.10 only
            import tomli as tomllib
        data = tomllib.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise OptionError(f"{path}: expected a mapping of options, got {type(data).__name__}")
    return {str(k).replace("_", "-"): v for k, v in data.items()}


def parse_config(argv: list[str] | None = None, prog: str = "localnat curate") -> CurateConfig:
    """Flags (and the config file they name) -> a validated CurateConfig; exits with a usage
    error naming the option on a bad value."""
    parser = build_parser(prog)
    args = vars(parser.parse_args(argv))
    path = args.pop("config", None)
    values = {}
    if path:
        try:
            values = read_config_file(path)
            CurateConfig.from_options(**values)  # the file must be valid on its own
        except (OptionError, OSError, ValueError) as err:
            parser.error(f"{path}: {err}")
    try:
        return CurateConfig.from_options(**{**values, **args})
    except (OptionError, ValueError) as err:
        parser.error(str(err))


def options_markdown() -> str:
    """The README options table."""
    lines = [
        "| option | default | meaning |",
        "|---|---|---|",
        "| `--config FILE` | | YAML or TOML; keys are the options below (`batch-tokens: "
        "8192`, `window: [4, 0.25]`); unknown keys and mistyped values are errors; "
        "flags replace the file's values |",
    ]
    for o in all_options():
        base = _strip_none(o.hint)
        arg = "" if base is bool else f" {metavar(o)}".replace("|", "\\|")
        lines.append(f"| `--{o.key}{arg}` | {default_text(o)} | {o.meta['help']} |")
    return "\n".join(lines) + "\n"


def as_command(cfg: CurateConfig, prog: str = "localnat curate") -> str:
    """The command line that makes `cfg`: every option off its default (a policy the config
    resolved, like --call-tokens, as the value it resolved to), URIs redacted."""
    words = [prog]
    for o in all_options():
        value = getattr(cfg.score if o.owner is ScoreConfig else cfg, o.field)
        if value == o.default or (o.repeatable and not value):
            continue
        if isinstance(value, bool):
            words.append(f"--{o.key}" if value else f"--no-{o.key}")
            continue
        for one in value if o.repeatable else (value,):
            if isinstance(one, Window):
                one = one.k if one.k is not None else one.w
            text = str(one)
            words += [f"--{o.key}", shlex.quote(redact(text))]
    return " ".join(words)


if __name__ == "__main__":  # regenerate the README table: python -m localnat.options
    print(options_markdown(), end="")
