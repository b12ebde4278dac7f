"""Checks of a command line before Hydra starts the run: the config composes, runs can be written.

Hydra refuses an unknown key or config option with its own message and exit status 1, after
creating nothing; nnlab composes the config once beforehand so that such mistakes get the same
one-line message and exit status 2 as every other bad value, with the keys that do exist.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from nnlab.errors import NO_VALUE, ConfigError


def compose_checked(config_dir: Path, overrides: list[str]) -> DictConfig:
    """The composed config of one job, or ConfigError naming the override Hydra refused."""
    parse(overrides)
    try:
        return _compose(config_dir, overrides)
    except MissingConfigException as error:
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        available = ", ".join(error.options or []) or "none"
        raise ConfigError(
            group or "config", option, f"no such option; available: {available}"
        ) from None
    except ConfigCompositionException as error:
        cause = error.__cause__
        if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
            raise _unknown_key(config_dir, overrides, str(cause.full_key)) from None
        raise ConfigError("overrides", NO_VALUE, str(error).strip()) from None


def first_job(overrides: list[str]) -> list[str]:
    """The overrides of a sweep's first job: each swept key at its first value.

    An interval (which only a search samples) stands at its lower end.
    """
    job = []
    for override in parse(overrides):
        if isinstance(override.value(), IntervalSweep):
            job.append(f"{override.get_key_element()}={override.value().start!r}")
        elif override.is_sweep_override():
            first = next(iter(override.sweep_string_iterator()))
            job.append(f"{override.get_key_element()}={first}")
        else:
            job.append(override.input_line)
    return job


def parse(overrides: list[str], key: str | None = None) -> list[Override]:
    """Hydra's parse of command-line overrides, with a syntax error as one ConfigError."""
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        reason = str(error.message).splitlines()[0]
        name, _, value = (error.override or "").partition("=")
        raise ConfigError(key or name.lstrip("+~"), value, f"cannot parse it: {reason}") from None


def check_writable(key: str, folder: str) -> None:
    """`folder` exists or can be made, and a file can be written in it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise ConfigError(key, folder, f"cannot write there ({error.strerror})") from None


def _compose(config_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def _unknown_key(config_dir: Path, overrides: list[str], full_key: str) -> ConfigError:
    """The refused override, and the keys that exist where it pointed."""

    def key_of(item: str) -> str:
        return item.split("=", 1)[0].lstrip("+~")

    refused = [
        o for o in overrides if key_of(o) == full_key or key_of(o).startswith(full_key + ".")
    ]
    key = refused[0].partition("=")[0] if refused else full_key
    key = key.lstrip("+~")
    parent = full_key.rpartition(".")[0]
    try:
        cfg = _compose(config_dir, [o for o in overrides if o not in refused])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        listed = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else "?"
    except Exception:  # the other overrides do not compose either: name the first problem only
        listed = "?"
    return ConfigError(
        key,
        parse(refused[:1])[0].value() if refused else NO_VALUE,
        f"unknown key; {parent or 'the config'} has: {listed} (a new key needs a +: +{key}=...)",
    )
