"""Command-line overrides (`key=value`), read and written with Hydra's own grammar.

The one place nnlab parses an override or writes one back: resuming, nnlab-eval, nnlab-report
and the search all go through here, so `5e-2` is a number and `'a,b'` a string everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, QuotedString
from hydra.errors import OverrideParseException

from nnlab.errors import ConfigError


def parse(overrides: list[str], key: str | None = None) -> list[Override]:
    """Hydra's parse of `overrides`; a syntax error is one ConfigError (under `key`, if given)."""
    try:
        return OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as error:
        raise parse_error(error, key) from None


def parse_error(error: OverrideParseException, key: str | None = None) -> ConfigError:
    """Hydra's refusal to parse an override, as one line: what to write instead, where known."""
    name, _, value = (error.override or "").partition("=")
    reason = f"cannot parse it: {str(error.message).splitlines()[0]}"
    if not value.isascii():  # Hydra's grammar takes letters beyond ASCII only in quotes
        reason = f"characters beyond ASCII need quotes: {name}='{value}'"
    return ConfigError(key or name.lstrip("+~"), value, reason)


@dataclass(frozen=True)
class CommandLine:
    """A command line as Hydra reads it: its flags (`-m`, `--cfg job`) and its overrides."""

    flags: list[str]
    overrides: list[str]
    multirun: bool


def command_line(arguments: list[str]) -> CommandLine:
    """Split `arguments` with Hydra's own argument parser, so that `--cfg job` is one flag
    and its value, not an override `job`. An unknown flag exits 2 with argparse's message."""
    from nnlab.internals import hydra_argument_parser

    parsed, _ = hydra_argument_parser().parse_known_args(arguments)
    overrides = list(parsed.overrides)
    flags, remaining = [], list(overrides)
    for argument in arguments:
        if remaining and argument == remaining[0]:
            remaining.pop(0)
        else:
            flags.append(argument)
    return CommandLine(flags, overrides, bool(parsed.multirun))


def key_of(override: str) -> str:
    """`+model.width=3` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def values(overrides: list[str]) -> dict[str, Any]:
    """Each overridden key and its value as Hydra reads it (the last one wins, as in Hydra)."""
    read = {}
    for override in parse(overrides):
        value = override.value()
        read[override.get_key_element().lstrip("+~")] = (
            value.text if isinstance(value, QuotedString) else value
        )
    return read


def quoted(text: str) -> str:
    """`text` as a value Hydra's parser reads back verbatim (paths may hold '=' and ',')."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def as_value(value: Any) -> str:
    """A Python value as an override's value that Hydra reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z_][\w.\-/]*", text)
    if plain and text.lower() not in {"null", "true", "false", "nan", "inf"}:
        return text
    return quoted(text)
