"""How nnlab's commands run Hydra and end: one place for turning what goes wrong into one line.

Hydra composes the command line once and runs the job. It is asked to raise its errors
(HYDRA_FULL_ERROR=1) rather than print them, so that a key or option that does not exist gets
nnlab's message and exit status 2, listing what does exist, like every other bad value.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from nnlab.checks import NO_VALUE
from nnlab.errors import FULL_ERROR, USER_FULL_ERROR, ConfigError, RunStopped, full_error, stop
from nnlab.overrides import command_line, key_of, parse, parse_error, values

COMPOSITION_ERRORS = (ConfigCompositionException, MissingConfigException, OverrideParseException)


def run_hydra(hydra_main: Callable[[], object], arguments: list[str], config_dir: Path) -> None:
    """Run a `@hydra.main` function on `arguments` with nnlab's configs; exit as nnlab exits."""
    os.environ.setdefault(USER_FULL_ERROR, "1" if full_error() else "0")
    os.environ[FULL_ERROR] = "1"
    sys.argv[1:] = ["--config-dir", str(config_dir), *arguments]
    line = command_line(arguments)
    overrides = line.overrides
    try:
        _refuse_paths_outside_their_place(config_dir, overrides)
        hydra_main()
    except COMPOSITION_ERRORS as error:
        stop(composition_error(config_dir, overrides, error))
    except MissingMandatoryValue as error:  # a required value no config set (task_name)
        key = str(error.full_key or "").split(":")[-1].strip() or "config"
        stop(ConfigError(key, NO_VALUE, "no value: the experiment= sets it, or set it yourself"))
    except RunStopped as error:
        if line.multirun:
            # A job of a sweep failed; the others ran. Hydra's status for it is 1.
            print(f"nnlab: a job of the sweep stopped: {error}", file=sys.stderr)
            raise SystemExit(1) from None
        stop(error)
    except OSError as error:
        if not _made_by_hydra(error):
            _crash()
        log_dir = values(overrides).get("paths.log_dir", NO_VALUE)
        reason = f"cannot write there ({error.strerror}: {error.filename})"
        stop(ConfigError("paths.log_dir", log_dir, reason))
    except Exception:
        _crash()


def _refuse_paths_outside_their_place(config_dir: Path, overrides: list[str]) -> None:
    """`experiment=../model/mlp` would load another group's file as an experiment, and
    `task_name=../../x` would make Hydra's run dir outside paths.log_dir, before any job."""
    for override in overrides:
        key, _, value = override.partition("=")
        key = key.lstrip("+~")
        leaves = ".." in value.split("/") or value.startswith("/")
        if key == "task_name" and (leaves or "/" in value):
            stop(ConfigError(key, value, "expected a plain folder name, inside paths.log_dir"))
        if leaves and (config_dir / key).is_dir():
            available = ", ".join(_options(config_dir, key)) or "none"
            stop(ConfigError(key, value, f"name an option of {key}/; available: {available}"))


def _options(config_dir: Path, group: str) -> list[str]:
    """The option names of a config group in nnlab's conf/ (Hydra's list, when it gives none)."""
    return sorted(path.stem for path in (config_dir / group).glob("*.yaml"))


def _crash() -> NoReturn:
    """An exception nnlab did not foresee: its traceback, exit status 1."""
    if full_error():
        raise
    traceback.print_exc()
    raise SystemExit(1) from None


def _made_by_hydra(error: OSError) -> bool:
    """Whether Hydra itself raised `error`, making a run or sweep dir before any job ran."""
    frames = [frame.filename for frame in traceback.extract_tb(error.__traceback__)]
    callers = [name for name in frames if not name.endswith(("pathlib.py", "os.py"))]
    return bool(callers) and f"{os.sep}hydra" in callers[-1]


def compose_once(config_dir: Path, overrides: list[str]) -> DictConfig:
    """The composed config of `overrides`, for the one check that must come before Hydra runs
    the command (resuming: which run, with which overrides); errors as ConfigError."""
    parse(overrides)
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            return compose(config_name="train", overrides=overrides)
    except COMPOSITION_ERRORS as error:
        raise composition_error(config_dir, overrides, error) from None


def composition_error(config_dir: Path, overrides: list[str], error: Exception) -> ConfigError:
    """Hydra's refusal to compose, as the override it refused and what exists instead."""
    if isinstance(error, OverrideParseException):
        return parse_error(error)
    if isinstance(error, MissingConfigException):
        group, _, option = str(error.missing_cfg_file).rpartition("/")
        available = ", ".join(error.options or _options(config_dir, group)) or "none"
        return ConfigError(group or "config", option, f"no such option; available: {available}")
    cause = error.__cause__
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return _unknown_key(config_dir, overrides, str(cause.full_key))
    return ConfigError("overrides", NO_VALUE, str(error).strip().splitlines()[0])


def _unknown_key(config_dir: Path, overrides: list[str], full_key: str) -> ConfigError:
    """The refused override, and the keys that exist where it pointed."""
    refused = [
        o for o in overrides if key_of(o) == full_key or key_of(o).startswith(full_key + ".")
    ]
    key = key_of(refused[0]) if refused else full_key
    parent = full_key.rpartition(".")[0]
    try:  # the config without the refused override: only on this error's path
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[o for o in overrides if o not in refused])
        node = OmegaConf.select(cfg, parent) if parent else cfg
        listed = ", ".join(str(k) for k in node) if isinstance(node, DictConfig) else "?"
    except Exception:
        listed = "?"
    return ConfigError(
        key,
        parse(refused[:1])[0].value() if refused else NO_VALUE,
        f"unknown key; {parent or 'the config'} has: {listed} (a new key needs a +: +{key}=...)",
    )
