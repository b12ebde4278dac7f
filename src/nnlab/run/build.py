"""Building a run's objects: `hydra.utils.instantiate`, with what goes wrong named under the key
the user types.

Hydra builds every object. Before it does, each `_target_` in the node is imported and its
keys are held against the target's signature, so that a typo names the key and what the class
takes. After, a constructor's refusal (nnlab.checks.BadValue, a library's ValueError) becomes
one ConfigError: `model.hidden_nodes=0: expected a positive integer`, even when the network is
built inside the task through `network: ${model}`. Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import re
from collections.abc import Mapping
from difflib import get_close_matches
from typing import Any

import hydra.utils
from hydra.errors import InstantiationException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab.checks import NO_VALUE, BadValue, free_memory
from nnlab.errors import ConfigError
from nnlab.run.console import DETAILS

log = logging.getLogger(DETAILS)
# Targets from these packages raise what they like for arguments they refuse (Lightning's
# Trainer: a RuntimeError for two callbacks with one state key): a bad config, not a bug.
LIBRARIES = ("lightning.", "torch.", "torchmetrics.", "torchvision.")
REFUSALS = (ValueError, TypeError, AssertionError)  # anyone's refusal of an argument


def build(cfg: DictConfig, key: str, **objects: Any) -> Any:
    """The object the node at `key` describes; `objects` are passed as they are (the Trainer's
    loggers and callbacks)."""
    node = OmegaConf.select(cfg, key)
    target = node.get("_target_") if isinstance(node, DictConfig) else None
    log.info("Instantiating %s <%s>", key, target)
    try:
        check_arguments(node, key, objects)
        built = hydra.utils.instantiate(node, **objects)
    except Exception as error:
        known = config_error(cfg, key, error)
        if known is not None:
            raise known from None
        if isinstance(error, InstantiationException) and error.__cause__ is not None:
            raise error.__cause__ from None  # a bug: its own traceback, not Hydra's wrapper
        raise
    _check_kind(built, key, target)
    return built


def _check_kind(built: Any, key: str, target: Any) -> None:
    """What the node built is what its place needs: a `_target_` that builds something else (a
    dict, a function's result) failed later, inside Lightning, with a traceback."""
    import lightning as L
    from lightning.pytorch.loggers import Logger

    kinds = {
        "task": L.LightningModule,
        "data": L.LightningDataModule,
        "logger": Logger,
        "callbacks": L.Callback,
    }
    kind = kinds.get(key.partition(".")[0])
    if kind is not None and built is not None and not isinstance(built, kind):
        reason = f"builds a {type(built).__name__}, not a {kind.__name__}"
        raise ConfigError(f"{key}._target_", target, reason)


def config_error(cfg: DictConfig, key: str, error: BaseException) -> ConfigError | None:
    """`error`, raised by `hydra.utils.instantiate` on the node `key`, as a ConfigError under
    the key the user types; None for a bug."""
    keyed = bad_value(cfg, [key], error)
    if keyed is not None:
        return keyed
    if isinstance(error, OmegaConfBaseException):  # an interpolation that cannot be resolved
        return ConfigError(key, NO_VALUE, _first_line(error))
    if isinstance(error, TypeError):  # Hydra's own checks of _recursive_, _convert_, _partial_:
        return ConfigError(key, NO_VALUE, _first_line(error))  # it wraps the target's errors
    if not isinstance(error, InstantiationException):
        return None
    cause = error.__cause__
    target = OmegaConf.select(cfg, f"{key}._target_", default=None)
    library = str(target).startswith(LIBRARIES) or _is_misconfiguration(cause)
    if cause is None or library or isinstance(cause, REFUSALS):
        return ConfigError(key, NO_VALUE, _first_line(cause or error))
    return None


def fit_error(cfg: DictConfig, error: BaseException) -> ConfigError | None:
    """`error`, raised inside Lightning's fit, as a ConfigError when it refuses the input: a
    BadValue from a data module's setup or a task's optimizer, or Lightning refusing the
    trainer's settings for this module. None for anything else."""
    keyed = bad_value(cfg, ["data", "task", "model"], error)
    if keyed is None and _is_misconfiguration(error):
        return ConfigError("trainer", NO_VALUE, _first_line(error))
    return keyed


def bad_value(cfg: DictConfig, keys: list[str], error: BaseException) -> ConfigError | None:
    """The ConfigError or BadValue along `error`'s chain of causes, under the key the user
    types: a BadValue's argument is looked for in the nodes `keys`, and below them."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConfigError):
            return ConfigError(user_key(cfg, seen.key), seen.value, seen.expected)
        if isinstance(seen, BadValue):
            name = re.split(r"[.\[]", seen.key)[0]  # hidden_nodes[1] is hidden_nodes's
            found = (_argument_path(OmegaConf.select(cfg, key), key, name) for key in keys)
            path = next((p for p in found if p), f"{keys[0]}.{name}")
            full = user_key(cfg, path + seen.key[len(name) :])
            return ConfigError(full, seen.value, seen.expected)
        seen = seen.__cause__ or seen.__context__
    return None


def _is_misconfiguration(error: BaseException | None) -> bool:
    # Lightning's MisconfigurationException, without importing Lightning here.
    return type(error).__name__ == "MisconfigurationException"


def check_arguments(node: Any, path: str, objects: Mapping[str, Any] | None = None) -> None:
    """Each `_target_` under `node` imports, and each of its keys is an argument it takes."""
    if isinstance(node, ListConfig):
        for index, item in enumerate(node):
            check_arguments(item, f"{path}[{index}]")
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        target = locate(str(node._target_), f"{path}._target_")
        _check_value_types(target, node, path)
        accepted = accepted_keys(target)
        given = [*(str(k) for k in node if not str(k).startswith("_")), *(objects or {})]
        for name in given if accepted is not None else []:
            if name not in accepted:
                close = get_close_matches(name, accepted, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                takes = f"{getattr(target, '__name__', target)} takes: {', '.join(accepted)}"
                value = node.get(name, NO_VALUE)
                raise ConfigError(f"{path}.{name}", value, f"unknown key; {takes}{hint}")
    for name, child in _children(node):
        check_arguments(child, f"{path}.{name}")


def _check_value_types(target: Any, node: DictConfig, path: str) -> None:
    """Text where the argument's default is a number or a switch (`task.hidden=abc`, the
    constructor's default 16): one line, rather than a failure deep inside the class."""
    try:
        parameters = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return
    expected = {bool: "true or false", int: "an integer", float: "a number"}
    for name, child in _children(node):
        default = getattr(parameters.get(name), "default", None)
        if isinstance(child, str) and type(default) in expected:
            owner = getattr(target, "__name__", str(target))
            reason = f"expected {expected[type(default)]} ({owner}'s {name} defaults to {default})"
            raise ConfigError(f"{path}.{name}", child, reason)


def _children(node: DictConfig) -> list[tuple[str, Any]]:
    """The node's values, resolved where they are interpolations (`network: ${model}`)."""
    children = []
    for name in node:
        try:
            children.append((str(name), node[name]))
        except OmegaConfBaseException:  # a missing value: Hydra names it when it builds
            continue
    return children


def accepted_keys(target: Any) -> list[str] | None:
    """The keyword arguments `target` accepts, or None if it takes any.

    A class whose __init__ passes **kwargs on to its base accepts the base's arguments too,
    so the chain of such __init__s is followed up the MRO.
    """
    try:
        signatures = (
            [inspect.signature(c.__init__) for c in target.__mro__ if "__init__" in vars(c)]
            if inspect.isclass(target)
            else [inspect.signature(target)]
        )
    except (TypeError, ValueError):  # a builtin without a signature
        return None
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


def locate(target: str, key: str) -> Any:
    """The object a dotted path names, as Hydra finds it (the longest importable module, then
    attributes); else ConfigError saying why not."""
    parts = target.split(".")
    for cut in range(len(parts), 0, -1):
        module = ".".join(parts[:cut])
        try:
            found = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name is not None and module.startswith(error.name) and cut > 1:
                continue  # a shorter path may be the module
            raise ConfigError(key, target, f"cannot be imported ({error})") from None
        except Exception as error:
            raise ConfigError(
                key, target, f"cannot be imported ({type(error).__name__}: {error})"
            ) from None
        for name in parts[cut:]:
            if not hasattr(found, name):
                raise ConfigError(
                    key, target, f"cannot be imported (module {module} has no {name})"
                )
            found = getattr(found, name)
        return found
    raise ConfigError(
        key, target, "cannot be imported (expected a dotted path like package.module.Class)"
    )


def _argument_path(node: Any, path: str, name: str) -> str | None:
    """The key `name` in the first node, from the one at `path` down (depth-first), that has
    it: where a constructor's BadValue about its argument `name` came from."""
    if not isinstance(node, DictConfig):
        return None
    if name in node:
        return f"{path}.{name}"
    for child_name, child in _children(node):
        found = _argument_path(child, f"{path}.{child_name}", name)
        if found:
            return found
    return None


def user_key(cfg: DictConfig, key: str) -> str:
    """`key`, with any prefix that is an interpolation `${other}` replaced by `other`: the
    network's `task.network.hidden_nodes` is the user's `model.hidden_nodes`."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        parent = OmegaConf.select(cfg, ".".join(parts[: end - 1])) if end > 1 else cfg
        name = parts[end - 1].split("[")[0]
        if isinstance(parent, DictConfig) and name in parent:
            raw = OmegaConf.to_container(parent, resolve=False).get(name)
            found = re.fullmatch(r"\$\{([\w.]+)\}", raw) if isinstance(raw, str) else None
            if found:
                return user_key(cfg, ".".join([found[1], *parts[end:]]))
    return key


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def check_network_fits(cfg: DictConfig) -> None:
    """The network `model` describes must fit, with its gradients and Adam's two moments, in
    the memory free here: a mistyped width would otherwise take it all, or be killed by the
    operating system with no message. It is built first on torch's meta device, where
    parameters have shapes and no memory (and no random numbers are drawn)."""
    import torch

    if not OmegaConf.select(cfg, "model._target_"):
        return  # no network config: the task builds its own
    with torch.device("meta"):
        probe = build(cfg, "model")
    if not isinstance(probe, torch.nn.Module):
        return
    parameters = sum(p.numel() for p in probe.parameters())
    needed = 16 * parameters  # 4 bytes each: weights, gradients and two optimizer moments
    free = free_memory()
    if free is not None and needed > free:
        raise ConfigError(
            "model",
            NO_VALUE,
            f"the network would have {parameters:,} parameters, {needed / 2**30:,.1f} GiB with "
            f"their gradients and optimizer state; {free / 2**30:,.1f} GiB of memory is free",
        )
