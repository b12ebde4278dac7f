"""A search space written in Hydra's sweep syntax, as Optuna's distributions, and back.

`choice(relu, tanh)` (or `relu,tanh`) is categorical; `range(1, 9)` and `int(interval(1, 8))`
are integers; `interval(1e-4, 1e-1)` is a float; `tag(log, ...)` samples an interval or a
range of step 1 on a log scale. A range of floats becomes the choice of its values.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from nnlab.checks import NO_VALUE
from nnlab.errors import ConfigError
from nnlab.overrides import as_value, parse, plain

Space = dict[str, BaseDistribution]
SYNTAX = "expected choice(...), range(start, stop) or interval(low, high) with low < high"


def search_space(params: dict[str, Any], arguments: list[str]) -> tuple[Space, list[str]]:
    """The distributions of the sweeper's `params` and of the command's sweeps; its fixed values.

    A sweep on the command line (`optimizer.lr='interval(1e-3, 1e-1)'`, `model.depth=1,2`)
    joins the search, replacing a parameter of the same key; a plain value
    (`model.hidden_nodes=7`) takes its key out of the search.
    """
    space = {key: distribution(key, str(spec)) for key, spec in params.items()}
    fixed = []
    for override in parse(arguments):
        key = override.get_key_element().lstrip("+~")
        if override.is_sweep_override():
            if override.get_key_element() != key:
                raise ConfigError(key, NO_VALUE, "a searched key must be in the config: no + or ~")
            space[key] = _distribution_of(override, key, override.input_line)
        else:
            space.pop(key, None)
            fixed.append(override.input_line)
    return space, fixed


def distribution(key: str, spec: str) -> BaseDistribution:
    """The distribution of one of the sweeper's `params`: `key: spec`."""
    (override,) = parse([f"{key}={spec}"], f"hydra.sweeper.params.{key}")
    return _distribution_of(override, f"hydra.sweeper.params.{key}", spec)


def grid_of(space: Space) -> dict[str, list[Any]]:
    """Optuna's GridSampler's search space: every value of each parameter. An interval has no
    grid: refused, naming it."""
    grid: dict[str, list[Any]] = {}
    for key, spread in space.items():
        if isinstance(spread, CategoricalDistribution):
            grid[key] = list(spread.choices)
        elif isinstance(spread, IntDistribution):
            grid[key] = list(range(spread.low, spread.high + 1, spread.step))
        else:
            reason = f"{key} is {described(spread)}: a grid takes choice(...) and range(...)"
            raise ConfigError("hydra.sweeper.sampler", "grid", reason)
    return grid


def described(distribution: BaseDistribution) -> str:
    """A distribution in the sweep syntax it came from."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(as_value(c) for c in distribution.choices)})"
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    if isinstance(distribution, IntDistribution):
        text = f"range({distribution.low}, {distribution.high + 1}, {distribution.step})"
    else:
        text = f"interval({distribution.low}, {distribution.high})"
    return f"tag(log, {text})" if distribution.log else text


def _distribution_of(override: Override, key: str, spec: str) -> BaseDistribution:
    sweep = override.value()
    tags = set(getattr(sweep, "tags", set()))
    log_scale = "log" in tags
    if tags - {"log"}:
        raise ConfigError(key, spec, f"unknown tag {sorted(tags - {'log'})[0]}; the one tag is log")
    if isinstance(sweep, ChoiceSweep) and not log_scale:
        return CategoricalDistribution([plain(v) for v in override.sweep_iterator()])
    if isinstance(sweep, RangeSweep):
        bounds = (sweep.start, sweep.stop, sweep.step)
        if all(isinstance(b, int) for b in bounds) and sweep.step > 0 and sweep.stop > sweep.start:
            last = sweep.start + (sweep.stop - 1 - sweep.start) // sweep.step * sweep.step
            if log_scale and (sweep.step != 1 or sweep.start < 1):
                raise ConfigError(key, spec, "a log scale needs a range of step 1 from 1 up")
            return IntDistribution(sweep.start, last, step=sweep.step, log=log_scale)
        values = list(override.sweep_iterator())
        if values and not log_scale:
            return CategoricalDistribution(values)
    if isinstance(sweep, IntervalSweep) and sweep.start < sweep.end:
        low, high = sweep.start, sweep.end
        if log_scale and low <= 0:
            raise ConfigError(key, spec, "a log scale needs an interval above 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    if log_scale:
        raise ConfigError(key, spec, "tag(log, ...) takes an interval or an integer range")
    raise ConfigError(key, spec, SYNTAX)
