"""A search space written in Hydra's sweep syntax, as Optuna's distributions.

`choice(relu, tanh)` (or `relu,tanh`) is categorical; `range(1, 9)` and `int(interval(1, 8))`
are integers; `interval(1e-4, 1e-1)` is a float; `tag(log, interval(...))` samples on a log
scale. A range of floats or with a negative step becomes the choice of its values.
"""

from __future__ import annotations

from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)
from optuna.study import Study

from nnlab.errors import ConfigError

Space = dict[str, BaseDistribution]


def search_space(params: dict[str, Any], arguments: list[str]) -> tuple[Space, list[str]]:
    """The distributions of the sweeper's `params` and of the command's sweeps; its fixed values.

    A sweep on the command line (`optimizer.lr='interval(1e-3, 1e-1)'`, `model.depth=1,2`)
    joins the search, replacing a parameter of the same key; a plain value
    (`model.hidden_nodes=7`) takes its key out of the search.
    """
    space = {key: distribution(key, str(spec)) for key, spec in params.items()}
    fixed = []
    for override in OverridesParser.create().parse_overrides(arguments):
        if override.is_sweep_override():
            key = override.get_key_element()  # with its + or ++
            space[key] = _distribution_of(override, key, override.input_line)
        else:
            space.pop(override.get_key_element().lstrip("+"), None)
            fixed.append(override.input_line)
    return space, fixed


def distribution(key: str, spec: str) -> BaseDistribution:
    """The distribution of one of the sweeper's `params`: `key: spec`."""
    (override,) = OverridesParser.create().parse_overrides([f"{key}={spec}"])
    return _distribution_of(override, f"hydra.sweeper.params.{key}", spec)


def check_same_space(study: Study, space: Space) -> None:
    """A study continues only over the space it began with: TPE cannot mix two."""
    for trial in study.get_trials(deepcopy=False):
        for key, old in trial.distributions.items():
            if key in space and old != space[key]:
                try:
                    check_distribution_compatibility(old, space[key])
                except ValueError:
                    raise ConfigError(
                        key,
                        described(space[key]),
                        f"study {study.study_name} searched {described(old)}; keep its space"
                        " or name a new study (hydra.sweeper.study_name=...)",
                    ) from None


def described(distribution: BaseDistribution) -> str:
    """A distribution in the sweep syntax it came from."""
    if isinstance(distribution, CategoricalDistribution):
        return f"choice({', '.join(map(str, distribution.choices))})"
    if isinstance(distribution, IntDistribution) and not distribution.log:
        return f"range({distribution.low}, {distribution.high + 1}, {distribution.step})"
    assert isinstance(distribution, IntDistribution | FloatDistribution)
    interval = f"interval({distribution.low}, {distribution.high})"
    return f"tag(log, {interval})" if distribution.log else interval


def _distribution_of(override: Override, key: str, spec: str) -> BaseDistribution:
    sweep = override.value()
    log_scale = "log" in getattr(sweep, "tags", set())
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        bounds = (sweep.start, sweep.stop, sweep.step)
        if all(isinstance(b, int) for b in bounds) and sweep.step > 0 and sweep.stop > sweep.start:
            last = sweep.start + (sweep.stop - 1 - sweep.start) // sweep.step * sweep.step
            return IntDistribution(sweep.start, last, step=sweep.step)
        values = list(override.sweep_iterator())
        if values:
            return CategoricalDistribution(values)
    if isinstance(sweep, IntervalSweep) and sweep.start < sweep.end:
        low, high = sweep.start, sweep.end
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log_scale)
        return FloatDistribution(float(low), float(high), log=log_scale)
    raise ConfigError(key, spec, "expected choice(...), range(...) or interval(low, high)")
