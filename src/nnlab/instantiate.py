"""`hydra.utils.instantiate`, with its errors turned into one ConfigError naming the config key.

Hydra builds every object nnlab makes from a config. This wrapper only translates what can go
wrong into the message a user can act on, under the key they would type:

    a constructor's BadValue or ValueError -> bad config model.hidden_nodes=0: expected ...
    an argument the target does not take   -> bad config model.width=4: unknown key; MLP takes ...
    a `_target_` that cannot be imported   -> bad config optimizer._target_='torch.optim.No': ...

Keys reached through an interpolation are named where the value lives: a task config holds
`network: ${model}`, so an error in `task.network.hidden_nodes` is reported as
`model.hidden_nodes`. Any other exception raised by nnlab's own code is a bug, and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Mapping
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab.checks import NO_VALUE, BadValue
from nnlab.errors import ConfigError
from nnlab.runtime import DETAILS

log = logging.getLogger(DETAILS)

_FULL_KEY = re.compile(r"\nfull_key: (\S+)\s*$")
_UNKNOWN_ARGUMENT = re.compile(r"got an unexpected keyword argument '(\w+)'")
_INTERPOLATION = re.compile(r"\$\{([\w.]+)\}")
# Targets from these packages raise whatever they like for arguments they refuse (Lightning's
# Trainer: RuntimeError for two callbacks with one state key): a bad config, not a bug.
LIBRARIES = ("lightning.", "torch.", "torchmetrics.", "torchvision.")


def instantiate(cfg: DictConfig, key: str, **objects: Any) -> Any:
    """Build the node at `key` of the run's config; `objects` are passed as they are (the
    Trainer's loggers and callbacks)."""
    node = OmegaConf.select(cfg, key)
    log.info("Instantiating %s <%s>", key, node.get("_target_") if node is not None else None)
    try:
        return build(node, key, **objects)
    except ConfigError as error:
        raise ConfigError(user_key(cfg, error.key), error.value, error.expected) from None


def build(node: Mapping | DictConfig, path: str, **objects: Any) -> Any:
    """`hydra.utils.instantiate(node, **objects)`; errors as ConfigErrors under `path`."""
    try:
        return hydra.utils.instantiate(node, **objects)
    except InstantiationException as error:
        raise _config_error(node, path, error) from None
    except OmegaConfBaseException as error:  # an interpolation that cannot be resolved
        raise ConfigError(path, NO_VALUE, str(error).splitlines()[0]) from None
    except TypeError as error:  # Hydra's own checks of _recursive_, _convert_, _partial_
        if not str(error).startswith(HYDRAS_FLAG_CHECK):
            raise
        flag = str(error).splitlines()[0].removeprefix(HYDRAS_FLAG_CHECK).strip()
        raise ConfigError(path, NO_VALUE, flag) from None


HYDRAS_FLAG_CHECK = "Instantiation:"


def user_key(cfg: DictConfig, key: str) -> str:
    """`key`, with any prefix that is an interpolation `${other}` replaced by `other`."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        parent = OmegaConf.select(cfg, ".".join(parts[: end - 1])) if end > 1 else cfg
        name = parts[end - 1]
        if isinstance(parent, DictConfig) and name in parent:
            raw = OmegaConf.to_container(parent, resolve=False).get(name)
            match = _INTERPOLATION.fullmatch(raw) if isinstance(raw, str) else None
            if match:
                return user_key(cfg, ".".join([match[1], *parts[end:]]))
    return key


def _config_error(node: Any, path: str, error: InstantiationException) -> Exception:
    found = _FULL_KEY.search(str(error))
    named = found[1] if found else ""
    # Hydra names the failing node from the config's root: absolute for a node of the run's
    # config (`task.network`), relative for a plain mapping.
    absolute = named == path or named.startswith(path + ".")
    key = named if absolute else f"{path}.{named}" if named else path
    cause = error.__cause__
    spec = _select(node, key[len(path) + 1 :]) if key != path else node
    target = spec.get("_target_") if isinstance(spec, Mapping | DictConfig) else None
    if isinstance(cause, ConfigError):
        return cause.under(key)
    if isinstance(cause, BadValue):
        return ConfigError.from_bad_value(cause, key)
    if isinstance(cause, ImportError) or (cause is None and "locating target" in str(error)):
        return ConfigError(f"{key}._target_", target, f"cannot be imported ({_why_not(target)})")
    if isinstance(cause, TypeError):
        unknown = _UNKNOWN_ARGUMENT.search(str(cause))
        if unknown:
            name = unknown[1]
            value = spec.get(name, NO_VALUE) if isinstance(spec, Mapping | DictConfig) else NO_VALUE
            return ConfigError(f"{key}.{name}", value, _unknown_key_message(target))
        if "required positional argument" in str(cause):
            return ConfigError(key, NO_VALUE, str(cause))
    if cause is None:  # Hydra's own refusal (a blocked target, a bad _args_)
        return ConfigError(key, NO_VALUE, str(error).splitlines()[0])
    library = str(target).startswith(LIBRARIES)
    if library or isinstance(cause, ValueError | AssertionError) or _is_misconfiguration(cause):
        # A library refusing its arguments, or a ValueError from anyone's: a bad value, not a bug.
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return ConfigError(key, NO_VALUE, reason)
    return cause  # anything else is a bug: raise it with its traceback


def _why_not(target: Any) -> str:
    """Why a dotted path does not import: the module is missing, or lacks the name."""
    module, _, name = str(target).rpartition(".")
    if not module:
        return "expected a dotted path like package.module.Class"
    try:
        importlib.import_module(module)
    except ImportError as error:
        return f"{type(error).__name__}: {error}"
    return f"module {module} has no {name}"


def _select(node: Any, relative: str) -> Any:
    for part in relative.split(".") if relative else []:
        if not isinstance(node, Mapping | DictConfig) or part not in node:
            return None
        node = node[part]
    return node


def _is_misconfiguration(error: BaseException) -> bool:
    # Lightning's MisconfigurationException, without importing Lightning here.
    return type(error).__name__ == "MisconfigurationException"


def _unknown_key_message(target: Any) -> str:
    try:
        obj = hydra.utils.get_object(target) if isinstance(target, str) else target
    except Exception:
        return "unknown key"
    accepted = accepted_keys(obj)
    name = getattr(obj, "__name__", str(target))
    return f"unknown key; {name} takes: {', '.join(accepted)}" if accepted else "unknown key"


def accepted_keys(target: Any) -> list[str] | None:
    """The keyword arguments `target` accepts, or None if it takes any.

    A class whose __init__ passes **kwargs on to its base accepts the base's arguments too,
    so the chain of such __init__s is followed up the MRO.
    """
    signatures = (
        [inspect.signature(cls.__init__) for cls in target.__mro__ if "__init__" in vars(cls)]
        if inspect.isclass(target)
        else [inspect.signature(target)]
    )
    accepted: list[str] = []
    for signature in signatures:
        forwards = False
        for name, parameter in signature.parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif name != "self" and parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                accepted.append(name)
        if not forwards:
            return list(dict.fromkeys(accepted))
    return None
