"""A claim's verdict, from its runs: the statistics are nnlab.report's (the mean and 95%
t-interval over seeds) and nnlab.compare's (McNemar's test, the binomial standard deviations,
the paired t-test over seeds).

Each rule judges a group of runs (the runs of one selector, e.g. `model.hidden_nodes=1`) as
holding, failing, or neither (inconclusive: the interval or the test cannot tell), and a
setting (the notebook's own, or nnlab's condition) holds when every group holds, fails when
any group fails. One seed never holds: it has no interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnlab.analysis.compare import compare_runs, paired_t_test
from nnlab.analysis.report import RunRecord, Summary, summarize
from nnlab.reproduce.claims import Claim, Rule, selector, selectors

HOLDS, FAILS, UNCLEAR = "holds", "fails", "unclear"
REPRODUCED, CONDITIONAL = "reproduced", "reproduced only under a condition"
SIDES = {"above": "at least", "below": "below", "greater": ">", "less": "<"}


@dataclass
class Group:
    """One selector's runs, judged: what the table says, and what the figure draws."""

    label: str
    outcome: str
    text: str  # the measurement, e.g. "test/acc 0.693 [0.690, 0.697], n=5"
    values: list[float]  # per seed: what the figure shows
    summary: Summary
    claimed: str = ""  # what the claim expects of it: "below 0.99", "> 0", "0.944 +- 0.015"
    reference: float | None = None  # the threshold, the notebook's number, or 0
    p_value: float = math.nan


@dataclass
class Setting:
    """The groups of one setting (the notebook's, or the condition's) and their outcome."""

    title: str
    tag: str = ""  # its overrides, short, for the figure: model.hidden_nodes=20
    groups: list[Group] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        outcomes = {group.outcome for group in self.groups}
        if not self.groups or FAILS in outcomes:
            return FAILS if self.groups else UNCLEAR
        return HOLDS if outcomes == {HOLDS} else UNCLEAR


def select(runs: list[RunRecord], wanted: dict[str, Any]) -> list[RunRecord]:
    """The runs whose overrides have every key and value of `wanted`."""
    return [run for run in runs if all(run.overrides.get(k) == v for k, v in wanted.items())]


def completed(runs: list[RunRecord], *metrics: str) -> list[RunRecord]:
    return [
        r
        for r in runs
        if r.completed and all(math.isfinite(r.metrics.get(m, math.nan)) for m in metrics)
    ]


def judge_setting(rule: Rule, runs: list[RunRecord], title: str, tag: str = "") -> Setting:
    """Judge one setting's runs: each selector of the rule's `expect` is a group (a
    classifiers rule has one group, B against A)."""
    setting = Setting(title, tag)
    if rule.test == "classifiers":
        setting.groups.append(_classifiers(rule, runs))
        return setting
    judge_group = {"threshold": _threshold, "paired": _paired, "value": _value}[rule.test]
    for text, expected in rule.expect.items():
        setting.groups.append(judge_group(rule, select(runs, selector(text)), text, expected))
    return setting


def _threshold(rule: Rule, runs: list[RunRecord], label: str, side: str) -> Group:
    """Holds when the 95% interval lies on the claimed side of the threshold; fails when the
    mean lies on the other side."""
    threshold, metric = float(rule.threshold or 0), str(rule.metric)
    values = [r.metrics[metric] for r in completed(runs, metric)]
    summary = summarize(values)
    if side == "above":
        holds, fails = summary.low >= threshold, summary.mean < threshold
    else:
        holds, fails = summary.high < threshold, summary.mean >= threshold
    reached = sum(value >= threshold for value in values)
    claimed = f"{SIDES[side]} {threshold:g}"
    text = (
        f"{label}: {metric} {summary} (claimed: {claimed}; "
        f"{reached} of {summary.n} seeds reached {threshold:g})"
    )
    outcome = _outcome(holds, fails, summary.n)
    return Group(label, outcome, text, values, summary, claimed, threshold)


def _paired(rule: Rule, runs: list[RunRecord], label: str, direction: str) -> Group:
    """a - b in each run (both metrics of one run: paired by seed); a one-sided paired t-test
    over seeds. Holds when p < alpha; fails when the mean difference has the other sign."""
    a, b = str(rule.a), str(rule.b)
    differences = [r.metrics[a] - r.metrics[b] for r in completed(runs, a, b)]
    summary = summarize(differences)
    p = paired_t_test(differences, direction)
    wrong_sign = summary.mean <= 0 if direction == "greater" else summary.mean >= 0
    claimed = f"{SIDES[direction]} 0"
    text = (
        f"{label}: {a} - {b} = {_signed(summary)} (claimed: {claimed}; paired t-test p = {p:.2g})"
    )
    outcome = _outcome(p < rule.alpha, wrong_sign, summary.n)
    return Group(label, outcome, text, differences, summary, claimed, 0.0, p)


def _classifiers(rule: Rule, runs: list[RunRecord]) -> Group:
    """B more accurate than A: each seed's A and B runs compared on the same test images
    (McNemar's exact test, the notebook's binomial standard deviations), and the per-seed
    accuracy differences tested over seeds (a one-sided paired t-test)."""
    a, b = str(rule.a), str(rule.b)
    by_seed = [
        {r.overrides.get("seed"): r for r in completed(select(runs, selector(which)))}
        for which in (a, b)
    ]
    seeds = sorted(by_seed[0].keys() & by_seed[1].keys(), key=str)
    pairs = [compare_runs(by_seed[0][s].path, by_seed[1][s].path) for s in seeds]
    differences = [c.accuracy_b - c.accuracy_a for c in pairs]
    summary = summarize(differences)
    p = paired_t_test(differences, "greater")
    mcnemar = [c.p_value for c in pairs]
    significant = sum(value < rule.alpha for value in mcnemar)
    images = pairs[0].images if pairs else 0
    text = (
        f"{b} - {a}: {rule.metric} {_signed(summary)}, "
        f"{summarize([c.binomial_sds for c in pairs])} binomial SDs of {images:,} test images "
        f"(claimed: > 0; paired t-test over seeds p = {p:.2g}; McNemar p < {rule.alpha:g} in "
        f"{significant} of {len(pairs)} seeds"
        + (f", largest p {max(mcnemar):.2g})" if mcnemar else ")")
    )
    outcome = _outcome(p < rule.alpha, summary.mean <= 0, summary.n)
    return Group(f"{b} vs {a}", outcome, text, differences, summary, "> 0", 0.0, p)


def _value(rule: Rule, runs: list[RunRecord], label: str, number: float) -> Group:
    """Holds when the mean over seeds is within `tolerance` of the notebook's number."""
    metric, tolerance = str(rule.metric), float(rule.tolerance or 0)
    values = [r.metrics[metric] for r in completed(runs, metric)]
    summary = summarize(values)
    close = abs(summary.mean - float(number)) <= tolerance
    claimed = f"{number:g} +- {tolerance:g}"
    text = f"{label}: {metric} {summary} (claimed: {claimed}, the notebook's number)"
    outcome = _outcome(close, not close, summary.n)
    return Group(label, outcome, text, values, summary, claimed, float(number))


def _outcome(holds: bool, fails: bool, n: int) -> str:
    if n == 0:
        return FAILS  # nothing completed: no evidence for the claim
    if n < 2:
        return UNCLEAR  # one seed: no interval, no test
    return HOLDS if holds else FAILS if fails else UNCLEAR


def _signed(summary: Summary) -> str:
    if summary.n < 2:
        return f"{summary.mean:+.4g} ({summary.n} run, no interval)"
    return f"{summary.mean:+.4g} [{summary.low:+.4g}, {summary.high:+.4g}]"


@dataclass
class Finding:
    """A claim's verdict and how it was reached."""

    claim: Claim
    dataset: str  # what the runs ran on: "rings", "MNIST", "Fashion-MNIST"
    verdict: str  # reproduced | reproduced only under a condition | not reproduced | ...
    why: str  # the condition, or what decided
    settings: list[Setting]
    runs: int
    failed_runs: list[str] = field(default_factory=list)
    decided_by: int = 0  # the setting whose outcome gave the verdict: 0, the notebook's

    @property
    def measurement(self) -> str:
        parts = []
        for setting in self.settings:
            groups = "; ".join(group.text for group in setting.groups)
            parts.append(f"{setting.title}: {groups}" if len(self.settings) > 1 else groups)
        return " | ".join(parts)

    @property
    def p_value(self) -> float:
        """The deciding setting's p-value (its largest: every group must hold), if tests decided."""
        groups = self.settings[self.decided_by].groups if self.settings else []
        values = [group.p_value for group in groups if math.isfinite(group.p_value)]
        return max(values) if values else math.nan


def judge(claim: Claim, runs: list[RunRecord], dataset: str, substituted: bool) -> Finding:
    """The claim's verdict over its runs. `substituted`: an image claim ran on Fashion-MNIST
    because MNIST is absent: a number of MNIST's is not checkable, a comparison is judged on
    Fashion-MNIST and says so."""
    failed = [f"{Path(r.path).name}: {r.status}" for r in runs if not r.completed]
    settings = [
        judge_setting(
            claim.rule,
            select(runs, selectors(claim.as_notebook)),
            "as in the notebook",
            ",".join(claim.as_notebook) or "notebook",
        )
    ]
    if claim.condition is not None:
        chosen = select(runs, selectors(claim.condition.runs))
        tag = ",".join(claim.condition.runs)
        settings.append(judge_setting(claim.rule, chosen, claim.condition.words, tag))

    def finding(verdict: str, why: str, decided_by: int = 0) -> Finding:
        return Finding(claim, dataset, verdict, why, settings, len(runs), failed, decided_by)

    if all(group.summary.n == 0 for setting in settings for group in setting.groups):
        return finding("not measured", failed[0] if failed else "no completed runs")
    fashion = "on Fashion-MNIST, not the notebook's MNIST (absent here)"
    if substituted and claim.rule.test == "value":
        return finding("not checkable here", f"the notebook's number is MNIST's; ran {fashion}")
    verdict, why, decided_by = _verdict(settings[0], settings[1:])
    if substituted:  # the verdict holds for Fashion-MNIST, and says so
        verdict = CONDITIONAL if verdict == REPRODUCED else verdict
        why = "; ".join(part for part in (why, fashion) if part)
    return finding(verdict, why, decided_by)


def _verdict(notebook: Setting, conditions: list[Setting]) -> tuple[str, str, int]:
    """The verdict, why, and which setting decided it (0: the notebook's)."""
    if notebook.outcome == HOLDS:
        return REPRODUCED, "", 0
    for number, condition in enumerate(conditions, start=1):
        if condition.outcome == HOLDS:
            lost = "fails" if notebook.outcome == FAILS else "is inconclusive"
            return CONDITIONAL, f"{condition.title}; as in the notebook it {lost}", number
    if notebook.outcome == FAILS:
        return "not reproduced", _first_group(notebook, FAILS), 0
    return "inconclusive", _first_group(notebook, UNCLEAR), 0


def _first_group(setting: Setting, outcome: str) -> str:
    """Why a setting did not hold: its first group with that outcome, claimed against measured."""
    group = next((g for g in setting.groups if g.outcome == outcome), None)
    if group is None:
        return ""
    if group.summary.n < 2:
        return f"{group.label}: {group.summary.n} completed seed(s), too few to judge"
    tested = f", p = {group.p_value:.2g}" if math.isfinite(group.p_value) else ""
    return f"{group.label}: claimed {group.claimed}, measured {group.summary}{tested}"
