"""`-m`'s sweeper: Hydra's own grid (every combination of the swept values), plus what nnlab
adds to a sweep: it stops whole on a signal, ends with one line saying how its jobs ended
(nnlab.sweeps), and names each job's dir after what varies between the jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, read_write

from nnlab import layout, sweeps
from nnlab.internals import hydra_grid


class GridSweeper(Sweeper):
    """Hydra's grid (its BasicSweeper's way of splitting the overrides into jobs), launched by
    nnlab's loop below.

    Not a subclass of BasicSweeper: Hydra re-executes its plugin modules at every scan, and
    BasicSweeper's `super(BasicSweeper, self)` then fails for a subclass of the class it was
    (a second sweep in one process: the tests, a notebook).
    """

    hydra_context: HydraContext
    config: DictConfig
    launcher: Launcher

    def __init__(self, max_batch_size: int | None, params: dict[str, str] | None = None) -> None:
        self.max_batch_size, self.params = max_batch_size, dict(params or {})

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        sweeps.check_launcher(self.config)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        swept = [f"{key}={value}" for key, value in self.params.items()]
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([*swept, *arguments])
        fixed = [o.get_key_element() for o in overrides if not o.is_sweep_override()]
        name_jobs_by_what_varies(self.config, fixed)
        batches = hydra_grid(overrides, self.max_batch_size)
        statuses: list[str] = []
        forward = "joblib" in str(self.config.hydra.launcher.get("_target_", ""))
        with sweeps.signals_stop_the_sweep(sweep_dir, forward_to_workers=forward) as watch:
            for batch in batches:
                if watch.signum is not None or sweeps.stopped_by(sweep_dir) is not None:
                    break
                self.validate_batch_is_legal(batch)
                results = self.launcher.launch(batch, initial_job_idx=len(statuses))
                statuses += [job_status(result) for result in results]
        total = sum(len(batch) for batch in batches)
        statuses += ["not run"] * (total - len(statuses))
        sweeps.finish(sweep_dir, statuses, watch.signum)


def name_jobs_by_what_varies(config: DictConfig, fixed: list[str]) -> None:
    """Leave the keys every job shares out of the jobs' dir names (Hydra's override_dirname),
    so that a name, and TensorBoard's run list, lead with what tells the jobs apart.

    The launcher composes each job from the sweep's Hydra overrides plus the job's own, so one
    Hydra override here reaches every job."""
    excluded = list(config.hydra.job.config.override_dirname.exclude_keys) + fixed
    setting = f"hydra.job.config.override_dirname.exclude_keys=[{','.join(excluded)}]"
    with read_write(config.hydra.overrides):
        config.hydra.overrides.hydra.append(setting)


def job_status(result: JobReturn) -> str:
    """How a job ended, as its metrics.json says (or its error, if it wrote none)."""
    job_dir = Path(str(result.hydra_cfg.hydra.runtime.output_dir))
    status = layout.read_metrics(job_dir).get("status")
    return str(status or f"failed: the job wrote no metrics.json (Hydra: {result.status.name})")
