"""`nnlab-reproduce`: run every claim of the notebook as a sweep over seeds, and judge it.

    nnlab-reproduce                      # every claim in claims/, into reproduce/
    nnlab-reproduce --quick              # 2 seeds and small budgets: is the report complete?
    nnlab-reproduce trainer=gpu          # on a GPU: the image claims on full MNIST
    nnlab-reproduce --only wave_left_side,series_trend
    nnlab-reproduce --judge reproduce/runs   # judge runs already made, train nothing

It writes <out>/findings.md, findings.csv and figures/<claim>.png; the runs are ordinary
nnlab-train sweeps in <out>/runs/<claim>/ (each sweep's output in <out>/runs/<claim>.log),
replaced when the claim runs again. Overrides after the options reach every sweep. The image
claims the notebook made on MNIST run on Fashion-MNIST when MNIST is not under
paths.data_dir (and nothing is downloaded then); with trainer=gpu they run on MNIST,
downloaded if need be, with the claims' gpu budgets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from nnlab.analysis.report import RunRecord
from nnlab.checks import BadValue, DataNotFound
from nnlab.errors import ConfigError, exits
from nnlab.reproduce import sweeps
from nnlab.reproduce.claims import Claim, claim_files, load_claim
from nnlab.reproduce.sweeps import DATASET_NAMES, Mode, Sweep

PROGRAM = "nnlab-reproduce"
PLAN = "plan.json"  # in the runs dir: which sweep measured which claim, and how


def arguments(argv: list[str] | None) -> argparse.Namespace:
    from nnlab.train import CONFIG_DIR

    parser = argparse.ArgumentParser(
        prog=PROGRAM, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="each claim's quick budget")
    parser.add_argument("--out", type=Path, default=Path("reproduce"), help="default: reproduce")
    parser.add_argument(
        "--claims", type=Path, default=CONFIG_DIR.parent / "claims", help="claim files"
    )
    parser.add_argument("--only", help="claims to run, by name, comma-separated")
    parser.add_argument("--jobs", type=int, default=2, help="parallel jobs per sweep (2)")
    parser.add_argument("--judge", type=Path, help="judge the runs in this folder; train nothing")
    parser.add_argument("overrides", nargs="*", help="nnlab-train overrides for every sweep")
    return parser.parse_args(argv)


def choose_mode(args: argparse.Namespace) -> Mode:
    """The budget and the image data, from the user's overrides as nnlab-train composes them."""
    from nnlab.api import compose_config

    if args.jobs < 1:
        raise ConfigError("--jobs", args.jobs, "expected at least 1 parallel job")
    cfg = compose_config(args.overrides)
    on_gpu = str(cfg.trainer.get("accelerator")) in ("gpu", "cuda")
    budget = "quick" if args.quick else "gpu" if on_gpu else "budget"
    overrides = tuple(args.overrides)
    if on_gpu:  # full MNIST, downloaded if it is not here
        return Mode(budget, "mnist", download=True, overrides=overrides)
    if mnist_present(Path(str(cfg.paths.data_dir))):
        return Mode(budget, "mnist", download=False, overrides=overrides)
    return Mode(budget, "fashion_mnist", download=False, overrides=overrides)


def mnist_present(data_dir: Path) -> bool:
    """Whether MNIST's four idx files are where nnlab-train looks for them first."""
    from nnlab.data.images import DATASETS, IDX_FILES

    raw = data_dir / DATASETS["mnist"].folder / "raw"
    return all((raw / name).is_file() for name in IDX_FILES)


def prepare_images(mode: Mode, data_dir: Path) -> str | None:
    """Unpack (or download) the image data once, before parallel jobs would race to do it.
    What went wrong, if it is not there."""
    from nnlab.data.images import ImageDataModule

    try:
        ImageDataModule(
            dataset=mode.dataset, data_dir=str(data_dir), download=mode.download
        ).prepare_data()
    except (BadValue, DataNotFound) as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> None:
    args = arguments(argv)
    runs_dir = args.judge or args.out / "runs"
    with exits(PROGRAM):
        if args.judge is not None and not args.judge.is_dir():  # else: every claim "not measured"
            raise ConfigError("--judge", str(args.judge), "no such folder of runs")
        claims = [load_claim(path) for path in claim_files(args.claims, _names(args.only))]
        if args.judge is None:
            train_claims(claims, choose_mode(args), runs_dir, args.jobs)
        written = judge_claims(claims, runs_dir, args.out)
    print(f"Wrote {written}, findings.csv and figures/ ({len(claims)} claims)")


def _names(only: str | None) -> list[str] | None:
    return [name.strip() for name in only.split(",") if name.strip()] if only else None


def train_claims(claims: list[Claim], mode: Mode, runs_dir: Path, jobs: int) -> None:
    """Run the claims' sweeps one after another, each with `jobs` parallel jobs, and record
    in the runs dir which sweep measured which claim, how, and the wall time."""
    from nnlab.api import compose_config

    planned = sweeps.plan(claims, mode)
    runs_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    missing = None
    if any(claim.data for claim in claims):
        data_dir = Path(str(compose_config(mode.overrides).paths.data_dir))
        missing = prepare_images(mode, data_dir)
    images = {claim.name for claim in claims if claim.data}
    for number, sweep in enumerate(planned, start=1):
        sweep_dir = runs_dir / sweep.name
        shutil.rmtree(sweep_dir, ignore_errors=True)  # the claim's earlier runs: replaced
        if missing and images & set(sweep.claims):
            sweep_dir.with_name(sweep.name + ".log").write_text(missing + "\n")
            ended = f"not run: {missing}"
        else:
            status, seconds, log = sweeps.run(sweep, sweep_dir, jobs)
            ended = f"{'done' if status == 0 else f'exit {status}, see {log}'} in {seconds:.0f} s"
        print(f"[{number}/{len(planned)}] {', '.join(sweep.claims)}: {ended}", flush=True)
    _write_plan(runs_dir, planned, mode, time.monotonic() - start)


def _write_plan(runs_dir: Path, planned: list[Sweep], mode: Mode, wall: float) -> None:
    content = {
        "budget": mode.budget,
        "dataset": mode.dataset,
        "wall_s": round(wall, 1),
        "claims": {claim: sweep.name for sweep in planned for claim in sweep.claims},
        "commands": {sweep.name: sweep.overrides for sweep in planned},
    }
    (runs_dir / PLAN).write_text(json.dumps(content, indent=2) + "\n")


def judge_claims(claims: list[Claim], runs_dir: Path, out: Path) -> Path:
    """Judge each claim on its sweep's runs and write the findings into `out`."""
    from nnlab.analysis.report import read_runs
    from nnlab.reproduce import findings
    from nnlab.reproduce.judge import judge

    saved = read_plan(runs_dir)
    sweep_of = {claim.name: saved["claims"].get(claim.name, claim.name) for claim in claims}
    results = []
    for claim in claims:
        sweep_dir = runs_dir / sweep_of[claim.name]
        runs = read_runs(sweep_dir) if sweep_dir.is_dir() else []
        dataset = dataset_of(runs, claim)
        substituted = claim.data == "mnist" and dataset == "fashion_mnist"
        finding = judge(claim, runs, DATASET_NAMES.get(dataset, dataset), substituted)
        if not runs:  # the sweep never started: its log's last line says why
            finding.why = _last_line(sweep_dir.with_name(sweep_dir.name + ".log")) or finding.why
        results.append(finding)
    out.mkdir(parents=True, exist_ok=True)
    runs_of = {name: str(runs_dir / sweep) for name, sweep in sweep_of.items()}
    commands = {name: saved["commands"].get(sweep) for name, sweep in sweep_of.items()}
    header = _header(saved, runs_dir)
    known = {name: overrides for name, overrides in commands.items() if overrides}
    return findings.write(results, out, runs_of, header, known, saved.get("budget", "budget"))


def read_plan(runs_dir: Path) -> dict:
    """The runs dir's plan.json (which sweep measured which claim, and how), read as untrusted
    data: a plan that is not one, or that names a sweep outside the runs dir (`/` walked the
    whole file system), is refused in one line."""
    from nnlab.run.layout import read_small

    path = runs_dir / PLAN
    if not path.exists():
        return {"claims": {}, "commands": {}}
    try:
        saved = json.loads(read_small(path))
    except (OSError, ValueError, RecursionError) as error:
        raise ConfigError("--judge", str(runs_dir), f"its {PLAN} does not read ({error})") from None
    claims = saved.get("claims", {}) if isinstance(saved, dict) else None
    commands = saved.get("commands", {}) if isinstance(saved, dict) else None
    if not isinstance(claims, dict) or not isinstance(commands, dict):
        raise ConfigError("--judge", str(runs_dir), f"its {PLAN} is not nnlab-reproduce's plan")
    for name, sweep in claims.items():
        if not isinstance(sweep, str) or Path(sweep).name != sweep or sweep in ("", ".", ".."):
            reason = f"its {PLAN} names {sweep!r} for {name}: a sweep is a folder of the runs dir"
            raise ConfigError("--judge", str(runs_dir), reason)
    for sweep, overrides in commands.items():
        if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
            reason = f"its {PLAN} gives {sweep} no list of overrides"
            raise ConfigError("--judge", str(runs_dir), reason)
    budget, wall = saved.get("budget"), saved.get("wall_s")
    kept = {"budget": budget} if isinstance(budget, str) else {}
    if isinstance(wall, int | float) and not isinstance(wall, bool):
        kept["wall_s"] = wall
    return kept | {"claims": claims, "commands": commands}


def _last_line(log: Path) -> str:
    lines = log.read_text().strip().splitlines() if log.is_file() else []
    return lines[-1] if lines else ""


def dataset_of(runs: list[RunRecord], claim: Claim) -> str:
    """What the runs trained on, from a run's saved config (for the image data); else what
    the claim names."""
    import yaml

    from nnlab.run import layout

    for run in runs:
        config = run.path / layout.HYDRA_DIR / "config.yaml"
        if config.is_file():
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
            return str(data.get("dataset") or claim.experiment.split("_")[0])
    return claim.data or claim.experiment.split("_")[0]


def _header(saved: dict, runs_dir: Path) -> list[str]:
    said = {
        "budget": "the full budgets, on the CPU",
        "quick": "--quick: 2 seeds, small budgets (a check of the report, not evidence)",
        "gpu": "the GPU budgets (trainer=gpu)",
    }
    budget = saved.get("budget", "?")
    lines = [
        f"`{PROGRAM}`, {said.get(budget, budget)}; runs in `{runs_dir}`.",
        "Each claim ran as a sweep of `nnlab-train -m` over seeds 0, 1, ...; a measurement is",
        "the mean over seeds and its 95% t-interval `[low, high]`; a comparison gives its",
        "test's p-value.",
    ]
    if "wall_s" in saved:
        lines.append(f"Wall time of the sweeps: {saved['wall_s'] / 60:.1f} min.")
    return lines


if __name__ == "__main__":
    main()
