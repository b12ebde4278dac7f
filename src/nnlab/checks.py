"""Argument checks for constructors: a value that cannot work raises `BadValue` naming it.

Plain Python, with neither Hydra nor Lightning, so that networks stay importable on their own.
`BadValue` is a `ValueError`; nnlab's builder (nnlab.instantiate) puts the config key in front
of the argument's name: `hidden_nodes` becomes `model.hidden_nodes`.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()  # for messages about a key as a whole, not one of its values


class BadValue(ValueError):
    """`key=value` cannot work; `expected` says what would."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = "" if self.value is NO_VALUE else f"={self.value!r}"
        return f"{self.key}{shown}: {self.expected}"

    def __reduce__(self) -> tuple[type, tuple[str, Any, str]]:
        return (type(self), (self.key, self.value, self.expected))


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(name, value, "expected an integer")
    if minimum is not None and value < minimum:
        raise BadValue(name, value, f"expected an integer >= {minimum}")
    return value


def check_float(
    name: str,
    value: Any,
    *,
    above: float | None = None,
    minimum: float | None = None,
    below: float | None = None,
) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadValue(name, value, "expected a finite number")
    if below is not None and not value < below:
        raise BadValue(name, value, f"expected a number < {below:g}")
    if above is not None and not value > above:
        raise BadValue(name, value, f"expected a number > {above:g}")
    if minimum is not None and value < minimum:
        raise BadValue(name, value, f"expected a number >= {minimum:g}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise BadValue(name, value, "expected true or false")
    return value


MAX_LAYERS = 10_000  # a network built layer by layer in Python: more is a typo, or hours


def check_fits_in_memory(name: str, value: Any, parameters: int) -> None:
    """A network of `parameters` float32 weights must fit, with its gradients and Adam's two
    moments, in the memory this machine has free: a mistyped width would otherwise take it all
    (or the operating system's OOM killer would end the process, with no message)."""
    needed = 16 * parameters  # 4 bytes each, for weights, gradients and two optimizer moments
    try:
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):  # not a POSIX system: nothing to compare with
        return
    if needed > free:
        raise BadValue(
            name,
            value,
            f"the network would have {parameters:,} parameters, {needed / 2**30:,.1f} GiB with "
            f"their gradients and optimizer state; {free / 2**30:,.1f} GiB of memory is free",
        )


def check_path(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadValue(name, value, "expected a path")
    try:
        Path(value).expanduser().exists()
    except OSError as error:  # a name longer than the file system takes, say
        raise BadValue(name, value, f"not a usable path: {error.strerror}") from None
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    if value not in choices:
        raise BadValue(name, value, f"expected one of: {', '.join(choices)}")
    return value


def check_range(name: str, value: Any) -> tuple[float, float]:
    """A [low, high) pair of numbers with low < high."""
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise BadValue(name, value, "expected a pair [low, high]")
    low = check_float(f"{name}[0]", value[0])
    high = check_float(f"{name}[1]", value[1])
    if not low < high:
        raise BadValue(name, value, "expected low < high")
    return low, high


def check_writable(key: str, folder: str) -> str:
    """`folder` exists or can be made, and a file can be written in it."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise BadValue(key, folder, f"cannot write there ({error.strerror})") from None
    return folder
