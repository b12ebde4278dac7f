"""What a constructor or a data module raises for input that cannot work: plain Python errors.

Networks, data modules and tasks import only this (no Hydra, no runner), so each stays usable
on its own. `BadValue` is a ValueError naming the argument; the runner puts the config key in
front of it, so `hidden_nodes` is reported as `model.hidden_nodes`. `DataNotFound` is a
FileNotFoundError that says where the data was looked for and how to get it.
"""

from __future__ import annotations

import math
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


class DataNotFound(FileNotFoundError):
    """A dataset that is nowhere it was looked for: where, and the ways to get it."""

    def __init__(self, title: str, looked: list[str], note: str, ways: list[str]) -> None:
        self.title, self.looked, self.note, self.ways = title, looked, note, ways
        super().__init__(str(self))

    def __str__(self) -> str:
        numbered = "; ".join(f"({i}) {way}" for i, way in enumerate(self.ways, start=1))
        looked = " and ".join(self.looked)
        return f"{self.title} not found: looked in {looked}; {self.note}. Get it by {numbered}"

    def __reduce__(self) -> tuple[type, tuple[str, list[str], str, list[str]]]:
        return (type(self), (self.title, self.looked, self.note, self.ways))


def check_int(
    name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadValue(name, value, "expected an integer")
    if minimum is not None and value < minimum:
        raise BadValue(name, value, f"expected an integer >= {minimum}")
    if maximum is not None and value > maximum:
        raise BadValue(name, value, f"expected an integer <= {maximum}")
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


def free_memory() -> int | None:
    """Bytes of memory available now (the page cache counts as available, as the kernel gives
    it back); None where the system does not say."""
    import psutil

    try:
        return int(psutil.virtual_memory().available)
    except (OSError, RuntimeError, NotImplementedError):
        return None


def check_fits_in_memory(name: str, value: Any, needed: int, what: str) -> None:
    """Refuse a size whose arrays would not fit in the memory free now, before any is made:
    the operating system would otherwise kill the run with no message, or it would swap for
    minutes, deaf to signals inside one huge step. `what` says what takes the memory."""
    free = free_memory()
    if free is not None and needed > free:
        gib = 2**30
        reason = f"{what} would take about {needed / gib:,.1f} GiB; {free / gib:,.1f} GiB is free"
        raise BadValue(name, value, reason)
