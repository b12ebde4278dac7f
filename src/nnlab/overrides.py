"""Overrides (`key=value`), read and written with Hydra's own grammar.

The one place nnlab parses an override or writes one back (a resumed run's saved overrides,
nnlab-report's columns, the search's sampled values), so `5e-2` is a number and `'a,b'` a
string everywhere, as on the command line.
"""

from __future__ import annotations

import re
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


def command_overrides() -> list[str]:
    """The overrides of the Hydra job under way, as Hydra keeps them ([] outside a job)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def key_of(override: str) -> str:
    """`+model.width=3` -> `model.width`."""
    return override.split("=", 1)[0].lstrip("+~")


def value_of(override: Override) -> Any:
    """The override's value as Python: a quoted string's text, not the quoting object."""
    return plain(override.value())


def plain(value: Any) -> Any:
    """A parsed value as Python: a quoted string's text, not the quoting object."""
    return value.text if isinstance(value, QuotedString) else value


def values(overrides: list[str]) -> dict[str, Any]:
    """Each overridden key and its value as Hydra reads it (the last one wins, as in Hydra)."""
    return {o.get_key_element().lstrip("+~"): value_of(o) for o in parse(overrides)}


def quoted(text: str) -> str:
    """`text` as a value Hydra's parser reads back verbatim (paths may hold '=' and ',')."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def as_value(value: Any) -> str:
    """A Python value as an override's value that Hydra reads back as the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    text = str(value)
    plain = re.fullmatch(r"[A-Za-z_][\w.\-/]*", text)
    if plain and text.lower() not in {"null", "true", "false", "nan", "inf"}:
        return text
    return quoted(text)
