"""findings.md, findings.csv and one figure per claim: what `nnlab-reproduce` hands back.

One row per claim: the notebook's words and number, the data the runs used, nnlab's
measurement (means with 95% t-intervals over seeds, and the test's p-value for a comparison),
the verdict and why, and the notebook's bug nnlab fixed where there was one.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from nnlab.reproduce.judge import Finding

COLUMNS = (
    "claim",
    "section",
    "notebook_words",
    "notebook_number",
    "data",
    "seeds",
    "measurement",
    "p_value",
    "verdict",
    "why",
    "notebook_bug_fixed",
    "budget",
    "runs",
    "figure",
)
NONE = "none"  # a cell with nothing to say still says so: every cell is filled
DEFAULT_BUDGET = "the experiment's, as configured"


def figure_name(finding: Finding) -> str:
    return f"figures/{finding.claim.name}.png"


def draw(finding: Finding, out: Path) -> Path:
    """The claim's figure: every group of every setting, its seeds, mean and interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from nnlab.plots.findings import interval_figure

    groups = [(setting, group) for setting in finding.settings for group in setting.groups]
    several = len(finding.settings) > 1
    labels = [
        f"{g.label}\n{s.tag}\nclaimed: {g.claimed}"
        if several
        else f"{g.label}\nclaimed: {g.claimed}"
        for s, g in groups
    ]
    if finding.claim.rule.test == "classifiers":
        labels = [f"B: {finding.claim.rule.b}\nA: {finding.claim.rule.a}" for _ in groups]
    rule = finding.claim.rule
    ylabel = {
        "paired": f"{rule.a} - {rule.b}",
        "classifiers": f"{rule.metric}, B - A",
    }.get(rule.test, str(rule.metric))
    figure = interval_figure(
        labels,
        [g.values for _, g in groups],
        [(g.summary.mean, g.summary.low, g.summary.high) for _, g in groups],
        [g.reference for _, g in groups],
        ylabel,
        f"{finding.claim.name} ({finding.dataset}): {finding.verdict}\n"
        "seeds (dots), mean and 95% interval (blue), the claim's reference (red)",
    )
    path = out / figure_name(finding)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(figure).print_png(str(path))
    return path


def row(finding: Finding, runs_dir: str, budget: str) -> dict[str, str]:
    """The claim's row; `budget` names which of its budgets ran (budget, quick, gpu)."""
    claim = finding.claim
    ran = getattr(claim, budget, None) or claim.budget
    seeds = sorted({g.summary.n for s in finding.settings for g in s.groups})
    failed = f"; {len(finding.failed_runs)} did not complete" if finding.failed_runs else ""
    return {
        "claim": claim.name,
        "section": claim.notebook.section,
        "notebook_words": " ".join(claim.notebook.words.split()),
        "notebook_number": claim.notebook.number,
        "data": finding.dataset,
        "seeds": "/".join(str(n) for n in seeds) or "0",
        "measurement": finding.measurement,
        "p_value": NONE if math.isnan(finding.p_value) else f"{finding.p_value:.3g}",
        "verdict": finding.verdict,
        "why": finding.why or NONE,
        "notebook_bug_fixed": " ".join((claim.fixed or NONE).split()),
        "budget": " ".join((ran.note or _default_budget(budget)).split()),
        "runs": f"{runs_dir} ({finding.runs} runs{failed})",
        "figure": figure_name(finding),
    }


def write(
    findings: list[Finding],
    out: Path,
    runs_of: dict[str, str],
    header: list[str],
    commands: dict[str, list[str]] | None = None,
    budget: str = "budget",
) -> Path:
    """findings.csv, findings.md and the figures, into `out`; `runs_of` names each claim's
    sweep dir, `commands` its nnlab-train overrides (when known)."""
    rows = [row(finding, runs_of[finding.claim.name], budget) for finding in findings]
    with (out / "findings.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    for finding in findings:
        draw(finding, out)
    lines = ["# The notebook's claims, reproduced", "", *header, ""]
    table = ["claim", "the notebook", "data", "nnlab's measurement", "verdict", "notes"]
    lines += ["| " + " | ".join(table) + " |", "|" + "---|" * len(table)]
    for cells in rows:
        notebook = f"{cells['notebook_words']} ({cells['notebook_number']})"
        verdict = f"**{cells['verdict']}**" + (f": {cells['why']}" if cells["why"] != NONE else "")
        notes = "; ".join(
            note
            for note in (
                _unless_none("Budget: ", cells["budget"], DEFAULT_BUDGET),
                _unless_none("Notebook bug fixed: ", cells["notebook_bug_fixed"], NONE),
            )
            if note
        )
        measured = cells["measurement"] + (f" (seeds: {cells['seeds']})" if cells["seeds"] else "")
        link = f"[{cells['claim']}](#{cells['claim']})"
        lines.append(
            "| "
            + " | ".join(
                _cell(c) for c in (link, notebook, cells["data"], measured, verdict, notes or "")
            )
            + " |"
        )
    lines.append("")
    for finding, cells in zip(findings, rows, strict=True):
        lines += _details(finding, cells, (commands or {}).get(finding.claim.name))
    (out / "findings.md").write_text("\n".join(lines) + "\n")
    return out / "findings.md"


def _details(finding: Finding, cells: dict[str, str], overrides: list[str] | None) -> list[str]:
    claim = finding.claim
    lines = [f"## {claim.name}", "", f"*{claim.notebook.section}.* {cells['notebook_words']}", ""]
    lines.append(f"- runs: `{cells['runs']}`; data: {finding.dataset}")
    if overrides:
        lines.append(f"- sweep: `nnlab-train -m {' '.join(overrides)}`")
    rule = claim.rule
    lines.append(
        f"- rule: {rule.test}"
        + (f", alpha {rule.alpha:g}" if rule.test in ("paired", "classifiers") else "")
    )
    for setting in finding.settings:
        lines.append(f"- {setting.title}: {setting.outcome}")
        lines += [f"  - {group.text}: {group.outcome}" for group in setting.groups]
    if finding.failed_runs:
        lines.append(f"- runs that did not complete: {'; '.join(finding.failed_runs[:3])}")
    lines.append(f"- verdict: **{finding.verdict}**" + (f" ({finding.why})" if finding.why else ""))
    return [*lines, "", f"![{claim.name}]({cells['figure']})", ""]


def _default_budget(budget: str) -> str:
    return "--quick's: small, a check of the report" if budget == "quick" else DEFAULT_BUDGET


def _unless_none(label: str, text: str, default: str) -> str:
    return "" if text == default else label + text


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
