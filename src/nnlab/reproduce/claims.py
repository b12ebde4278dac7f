"""The claim files, `claims/<name>.yaml`: one claim of the notebook each, read and checked.

A claim names what the notebook said, the sweep that measures it (an experiment, its swept
overrides and budgets; the seeds are added), and the rule that judges it. The schema is the
dataclasses below, so OmegaConf refuses a mistyped key or a wrong type; what it cannot judge
(a rule's fields, overrides that do not parse) is checked here. Any mistake is one ConfigError
naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nnlab.errors import ConfigError
from nnlab.overrides import parse, values

ALL = "all"  # a selector that takes every run of a setting
# What each rule's `expect` maps its selectors to.
EXPECTATIONS: dict[str, tuple[str, ...]] = {
    "threshold": ("above", "below"),  # the metric's mean and 95% interval, against `threshold`
    "paired": ("greater", "less"),  # metric a - metric b of each run, a paired t-test over seeds
    "classifiers": ("greater",),  # runs b more accurate than runs a: seeds paired, McNemar per seed
    "value": (),  # the metric's mean against the notebook's number, within `tolerance`
}
IMAGE_DATASETS = ("mnist", "fashion_mnist")


@dataclass
class Notebook:
    section: str = MISSING  # the notebook's section
    words: str = MISSING  # what it said, in its own words
    number: str = MISSING  # the number it gave ("none" when it gave none)


@dataclass
class Budget:
    seeds: int = 5  # seeds 0 .. seeds-1, each a job of the sweep (per setting)
    overrides: list[str] = field(default_factory=list)  # e.g. trainer.max_steps=2000
    note: str | None = None  # how it departs from the notebook's budget, said in the findings


@dataclass
class Rule:
    test: str = MISSING  # threshold | paired | classifiers | value
    metric: str | None = None  # threshold, value; classifiers: the accuracy reported
    a: str | None = None  # paired: a metric; classifiers: an override selecting A's runs
    b: str | None = None
    threshold: float | None = None  # threshold
    tolerance: float | None = None  # value: how far the mean may be from the notebook's number
    alpha: float = 0.05  # paired, classifiers: the significance level
    # selector (an override such as model.hidden_nodes=1, or `all`) -> what the claim expects
    expect: dict[str, Any] = field(default_factory=dict)


@dataclass
class Condition:
    runs: list[str] = field(default_factory=list)  # overrides selecting the condition's runs
    words: str = MISSING  # "with 20 hidden nodes (the notebook's 10 often stall)"


@dataclass
class Claim:
    notebook: Notebook = field(default_factory=Notebook)
    experiment: str = MISSING
    sweep: list[str] = field(default_factory=list)  # swept overrides, Hydra's syntax (a=1,2)
    overrides: list[str] = field(default_factory=list)  # fixed, for every budget
    budget: Budget = field(default_factory=Budget)  # the full reproduction on the CPU
    quick: Budget = field(default_factory=lambda: Budget(seeds=2))  # --quick
    gpu: Budget | None = None  # with trainer=gpu; none: `budget`
    data: str | None = None  # the image dataset the notebook used (mnist), if it used one
    # Overrides selecting the runs that are the notebook's own setting (none: every run).
    as_notebook: list[str] = field(default_factory=list)
    condition: Condition | None = None  # nnlab's setting, judged when the notebook's fails
    fixed: str | None = None  # a bug of the notebook's that nnlab fixed, said beside the claim
    rule: Rule = field(default_factory=Rule)
    name: str = ""  # the file's name, set when read


def claim_files(folder: Path, only: list[str] | None = None) -> list[Path]:
    """The claim files in `folder`, sorted; `only` picks some by name (each must exist)."""
    files = sorted(Path(folder).glob("*.yaml"))
    if not files:
        raise ConfigError("--claims", str(folder), "no claim files (<name>.yaml) there")
    if only:
        known = {path.stem: path for path in files}
        unknown = [name for name in only if name not in known]
        if unknown:
            raise ConfigError(
                "--only", ",".join(unknown), f"no such claim; have: {', '.join(known)}"
            )
        files = [known[name] for name in only]
    return files


def load_claim(path: Path) -> Claim:
    """One claim file, checked; a mistake is a ConfigError naming the file and the key."""
    name = Path(path).stem
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Claim), OmegaConf.load(path))
        claim: Claim = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as error:
        key = str(error.full_key or "") if hasattr(error, "full_key") else ""
        reason = str(error).strip().splitlines()[0]
        raise ConfigError(
            f"claim {name}" + (f": {key}" if key else ""), str(path), reason
        ) from None
    except (OSError, ValueError, yaml.YAMLError) as error:  # unreadable, or not YAML
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ConfigError(f"claim {name}", str(path), reason) from None
    claim.name = name
    _check(claim)
    return claim


def _check(claim: Claim) -> None:
    def bad(key: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"claim {claim.name}: {key}", value, expected)

    rule = claim.rule
    if rule.test not in EXPECTATIONS:
        raise bad("rule.test", rule.test, f"expected one of {', '.join(EXPECTATIONS)}")
    for budget_name in ("budget", "quick", "gpu"):
        budget = getattr(claim, budget_name)
        if budget is not None:
            if budget.seeds < 1:
                raise bad(f"{budget_name}.seeds", budget.seeds, "expected at least 1 seed")
            parse(budget.overrides, f"claim {claim.name}: {budget_name}.overrides")
    parse([*claim.sweep, *claim.overrides], f"claim {claim.name}: sweep")
    if claim.data is not None and claim.data not in IMAGE_DATASETS:
        raise bad("data", claim.data, f"expected one of {', '.join(IMAGE_DATASETS)}, or null")
    needs = {
        "threshold": ("metric", "threshold"),
        "paired": ("a", "b"),
        "classifiers": ("a", "b", "metric"),
        "value": ("metric", "tolerance"),
    }[rule.test]
    for key in needs:
        if getattr(rule, key) is None:
            raise bad(f"rule.{key}", None, f"a {rule.test} rule needs it")
    if rule.test == "classifiers":
        selectors([rule.a, rule.b])
    if not rule.expect and rule.test != "classifiers":
        raise bad("rule.expect", {}, "expected at least one selector: what the claim expects")
    for selector, expected in rule.expect.items():
        selectors([selector])
        allowed = EXPECTATIONS[rule.test]
        if allowed and expected not in allowed:
            raise bad(f"rule.expect.{selector}", expected, f"expected {' or '.join(allowed)}")
        if not allowed and not isinstance(expected, int | float):
            raise bad(f"rule.expect.{selector}", expected, "expected the notebook's number")
    selectors(claim.as_notebook)
    if claim.condition is not None:
        selectors(claim.condition.runs)


def selectors(overrides: list[str] | list[str | None]) -> dict[str, Any]:
    """Overrides as the keys and values a run must have (`all`: none), checked to parse."""
    chosen = [o for o in overrides if o and o != ALL]
    return values(chosen) if chosen else {}  # values() parses: a syntax error is a ConfigError


def selector(text: str) -> dict[str, Any]:
    """One selector as keys and values: `model.hidden_nodes=1` -> {'model.hidden_nodes': 1}."""
    return {} if text == ALL else values([text])
