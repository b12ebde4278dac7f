"""Building objects from config nodes, and turning bad values into one clear message.

nnlab's classes check their own arguments with the `check_*` helpers and raise `ConfigError`
naming the argument. `build` adds the node's path (`model.`), checks that every key is an
argument of the target, and wraps the errors of third-party targets (Lightning's Trainer,
callbacks, loggers), so a user reads `model.hidden_nodes=0: expected a positive integer`
before any data is loaded, not a traceback an hour later.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from nnlab.errors import NO_VALUE, ConfigError

# Keys Hydra reserves in an instantiable node; nnlab's builder ignores them.
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, "expected an integer")
    if minimum is not None and value < minimum:
        raise ConfigError(name, value, f"expected an integer >= {minimum}")
    return value


def check_float(
    name: str, value: Any, *, above: float | None = None, minimum: float | None = None
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(name, value, "expected a finite number")
    if above is not None and not value > above:
        raise ConfigError(name, value, f"expected a number > {above:g}")
    if minimum is not None and value < minimum:
        raise ConfigError(name, value, f"expected a number >= {minimum:g}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(name, value, "expected true or false")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(name, value, f"expected one of: {', '.join(choices)}")
    return value


def check_range(name: str, value: Any) -> tuple[float, float]:
    """A [low, high) pair of numbers with low < high."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ConfigError(name, value, "expected a pair [low, high]")
    low = check_float(f"{name}[0]", value[0])
    high = check_float(f"{name}[1]", value[1])
    if not low < high:
        raise ConfigError(name, value, "expected low < high")
    return low, high


def target_of(dotted: Any, path: str) -> Any:
    """The class or function a `_target_` names."""
    if not isinstance(dotted, str) or "." not in dotted:
        raise ConfigError(
            f"{path}._target_", dotted, "expected a dotted path like pkg.module.Class"
        )
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"{path}._target_", dotted, f"cannot be imported ({error})") from None


def build(node: DictConfig, path: str, **extra: Any) -> Any:
    """Instantiate `node` (a `_target_` plus keyword arguments), reporting errors under `path`.

    `extra` passes objects that are not config values, such as the network a task trains.
    Arguments that are themselves nodes with a `_target_` are built first, as Hydra's
    `instantiate` does. With `_partial_: true` the result is a functools.partial, completed
    later (an optimizer gets its parameters that way).
    """
    return _build_spec(OmegaConf.to_container(node, resolve=True), path, extra)


def _build_spec(spec: dict[str, Any], path: str, extra: dict[str, Any]) -> Any:
    target = target_of(spec.get("_target_"), path)
    kwargs = {
        key: _build_value(value, f"{path}.{key}")
        for key, value in spec.items()
        if key not in _HYDRA_KEYS
    }
    _check_keys(target, kwargs, path)
    if spec.get("_partial_"):
        return functools.partial(target, **kwargs, **extra)
    try:
        return target(**kwargs, **extra)
    except ConfigError as error:
        raise error.under(path) from None
    except (TypeError, ValueError, AssertionError) as error:
        if target.__module__.startswith("nnlab."):
            raise  # a bug in nnlab, not a bad value: keep the traceback
        reason = (
            str(error) or f"{getattr(target, '__name__', target)} rejected one of its arguments"
        )
        raise ConfigError(path, NO_VALUE, reason) from None
    except Exception as error:
        # Lightning raises MisconfigurationException (a subclass of Exception) for bad arguments.
        if type(error).__name__ != "MisconfigurationException":
            raise
        raise ConfigError(path, NO_VALUE, str(error)) from None


def _build_value(value: Any, path: str) -> Any:
    if isinstance(value, dict) and "_target_" in value:
        return _build_spec(value, path, {})
    if isinstance(value, list):
        return [_build_value(item, f"{path}[{index}]") for index, item in enumerate(value)]
    return value


def _check_keys(target: Any, kwargs: dict[str, Any], path: str) -> None:
    allowed = _accepted_keys(target)
    if allowed is None:
        return
    for key, value in kwargs.items():
        if key not in allowed:
            name = getattr(target, "__name__", str(target))
            raise ConfigError(
                f"{path}.{key}", value, f"unknown key; {name} takes: {', '.join(allowed)}"
            )


def _accepted_keys(target: Any) -> list[str] | None:
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
