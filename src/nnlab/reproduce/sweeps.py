"""Each claim's sweep: the `nnlab-train -m` command that measures it, and running it.

A claim's runs are an ordinary sweep of nnlab-train (the same training path, run dirs,
metrics.json and predictions as any sweep), in a process of its own through Hydra's joblib
launcher: `jobs` jobs at a time, one torch thread each. Claims whose commands are the same
(the autoencoder's two claims) share one sweep.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from nnlab.overrides import as_value
from nnlab.reproduce.claims import Budget, Claim

DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


@dataclass(frozen=True)
class Mode:
    """How this reproduction runs: its budget, its image data, the user's own overrides."""

    budget: str  # budget | quick | gpu: which of a claim's budgets
    dataset: str  # mnist | fashion_mnist: what the claims made on MNIST run on
    download: bool  # whether a missing dataset may be downloaded (data.download)
    overrides: tuple[str, ...] = ()  # the user's, for every sweep (trainer=gpu, paths.data_dir=...)

    def budget_of(self, claim: Claim) -> Budget:
        chosen = getattr(claim, self.budget)
        return chosen if chosen is not None else claim.budget

    def substitutes(self, claim: Claim) -> bool:
        """Whether the claim was made on MNIST and runs on Fashion-MNIST here."""
        return claim.data == "mnist" and self.dataset != "mnist"


@dataclass
class Sweep:
    """One sweep's command and the claims it measures."""

    name: str  # its folder under the runs dir: the first claim's name
    overrides: list[str]
    claims: list[str] = field(default_factory=list)


def overrides_of(claim: Claim, mode: Mode) -> list[str]:
    """The claim's `nnlab-train -m` overrides: experiment, swept keys, seeds, budget, data."""
    budget = mode.budget_of(claim)
    seeds = ",".join(str(seed) for seed in range(budget.seeds))
    data = []
    if claim.data is not None:  # ++: set even where a swept experiment is not yet applied
        download = str(mode.download).lower()
        data = [f"++data.dataset={mode.dataset}", f"++data.download={download}"]
    return [
        f"experiment={claim.experiment}",
        *claim.sweep,
        f"seed={seeds}",
        *claim.overrides,
        *budget.overrides,
        *data,
        *mode.overrides,
    ]


def plan(claims: list[Claim], mode: Mode) -> list[Sweep]:
    """The sweeps that measure `claims`: one per distinct command, in the claims' order."""
    sweeps: dict[tuple[str, ...], Sweep] = {}
    for claim in claims:
        overrides = overrides_of(claim, mode)
        sweep = sweeps.setdefault(tuple(overrides), Sweep(claim.name, overrides))
        sweep.claims.append(claim.name)
    return list(sweeps.values())


def command(sweep: Sweep, sweep_dir: Path, jobs: int) -> list[str]:
    """`python -m nnlab.train -m ...`: the sweep as nnlab-train runs it, into `sweep_dir`."""
    launcher = [f"hydra.launcher.n_jobs={jobs}", "threads=1"]  # one torch thread per job
    where = [  # a sweep's dir lies inside paths.log_dir
        f"paths.log_dir={as_value(str(sweep_dir.parent))}",
        f"hydra.sweep.dir={as_value(str(sweep_dir))}",
    ]
    return [sys.executable, "-m", "nnlab.train", "-m", *sweep.overrides, *launcher, *where]


def run(sweep: Sweep, sweep_dir: Path, jobs: int) -> tuple[int, float, Path]:
    """Run the sweep; its output goes to `<sweep_dir>.log`. Its exit status, its seconds, and
    the log. A sweep with a failed job exits 1; its other jobs ran, and are judged."""
    sweep_dir.parent.mkdir(parents=True, exist_ok=True)
    log = sweep_dir.with_name(sweep_dir.name + ".log")
    start = time.monotonic()
    with log.open("w") as output:
        output.write(" ".join(command(sweep, sweep_dir, jobs)) + "\n")
        output.flush()
        status = subprocess.call(
            command(sweep, sweep_dir, jobs), stdout=output, stderr=subprocess.STDOUT
        )
    return status, time.monotonic() - start, log
