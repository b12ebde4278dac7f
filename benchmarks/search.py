"""`make bench`: a search's trials run without a barrier (issue 20, point 2).

12 rings trials whose lengths vary about 1:5 (`trainer.max_steps` from 1,000 to 9,800; each
trial also spends about a second setting up and writing its record), run by the grid sampler
on 2 joblib workers, twice each way, interleaved:

- nnlab's search: each worker takes the next trial as soon as its last one ends;
- the batched launch it replaced (batched_trials below): 2 trials per launch, the next two
  once the slower of the two has ended.

The figure is the search's time, from its first trial's start to its last trial's end, against
the ideal: the sum of its trials' times / 2. A trial's time is its job's own, in its worker:
from the config Hydra writes as the job starts to the last file the run writes (Optuna's
times would count a batched trial's wait for its partner). Target: <= 1.15x for nnlab's
search; the batched launch is the reference.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna

from nnlab.api import sweep
from nnlab.overrides import as_value
from nnlab.run.layout import read_metrics
from nnlab.sweep.search import OptunaSweeper

TARGET = 1.15
STEPS = "range(1000, 10000, 800)"  # 12 values
TRIALS = 12


def batched_trials(self: OptunaSweeper, study: Any, space: Any, at_once: int, _: Any) -> None:
    """The launch nnlab's search used before, in place of OptunaSweeper._run_trials for this
    comparison: ask `at_once` trials, launch them together, ask again once all have ended."""
    while True:
        trials = []
        while len(trials) < at_once and (trial := self._ask(study, space)) is not None:
            trials.append(trial)
        if not trials:
            return
        jobs = [[*self.fixed, *(f"{k}={as_value(v)}" for k, v in t.params.items())] for t in trials]
        results = self.launcher.launch(jobs, initial_job_idx=len(self.asked) - len(trials))
        for trial, result in zip(trials, results, strict=True):
            self._tell(study, trial, result, space)
            self.running.discard(trial.number)


def search_seconds(log_dir: str, batched: bool) -> tuple[float, float]:
    """One search of the 12 trials: its span and the ideal span, in seconds."""
    run_trials = OptunaSweeper._run_trials
    if batched:  # the sweeper runs in this process (nnlab.api.sweep); its trials in workers
        OptunaSweeper._run_trials = batched_trials
    try:
        sweep(
            [
                "hparams_search=rings_optuna",
                f"paths.log_dir={log_dir}",
                "hydra.sweeper.sampler=grid",
                "hydra.sweeper.n_trials=12",
                "hydra.sweeper.n_jobs=2",
                "hydra.launcher.n_jobs=2",
                "model.hidden_nodes=4",
                "model.activation=tanh",
                "optimizer.lr=0.003",
                f"trainer.max_steps={STEPS}",
            ]
        )
    finally:
        OptunaSweeper._run_trials = run_trials
    (sweep_dir,) = Path(log_dir, "rings", "multiruns").iterdir()
    jobs = [job for job in sweep_dir.iterdir() if job.is_dir() and job.name[:1].isdigit()]
    if len(jobs) != TRIALS or any(read_metrics(job).get("status") != "completed" for job in jobs):
        sys.exit(f"the search did not complete its {TRIALS} trials in {sweep_dir}")
    spans = [job_span(job) for job in jobs]
    lengths = sorted(end - start for start, end in spans)
    print(f"    trials {lengths[0]:.1f} .. {lengths[-1]:.1f} s", file=sys.stderr)
    span = max(end for _, end in spans) - min(start for start, _ in spans)
    return span, sum(lengths) / 2


def job_span(job: Path) -> tuple[float, float]:
    """When the job started (Hydra's config of it) and ended (the last file its run wrote)."""
    started = (job / ".hydra" / "config.yaml").stat().st_mtime
    return started, max(path.stat().st_mtime for path in job.rglob("*"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ratios: dict[str, list[float]] = {"without a barrier": [], "batched (before)": []}
    for _ in range(args.repeats):  # interleaved: a busy moment slows both alike
        for label, batched in (("without a barrier", False), ("batched (before)", True)):
            with tempfile.TemporaryDirectory() as log_dir:
                span, ideal = search_seconds(str(Path(log_dir).resolve()), batched)
            ratios[label].append(span / ideal)
            print(f"  {label:<18} {span:6.1f} s, ideal {ideal:6.1f} s", file=sys.stderr)
    print(f"Search of {TRIALS} trials (lengths ~1:5) on 2 workers, best of {args.repeats}:")
    for label, values in ratios.items():
        target = f"target <= {TARGET}x" if label == "without a barrier" else "reference"
        print(f"  {label:<18} {min(values):.2f}x the ideal ({target})")
    if min(ratios["without a barrier"]) > TARGET:
        sys.exit(1)


if __name__ == "__main__":
    main()
