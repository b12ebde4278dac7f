"""What a run dir holds and where: the one home for the paths nnlab reads back.

<run dir>/.hydra/config.yaml       the composed config (overrides.yaml: the command's)
<run dir>/checkpoints/last.ckpt    where training stopped (best.ckpt: the best val/loss)
<run dir>/metrics.json             the final metrics and `status`
<run dir>/evals/<stamp>/           nnlab-eval's results
<sweep dir>/sweep_stopped          a signal stopped the sweep (its name): no job starts after it
"""

from __future__ import annotations

import json
from pathlib import Path

HYDRA_DIR = ".hydra"
CHECKPOINTS = "checkpoints"  # conf/callbacks/default.yaml puts ModelCheckpoint's files here too
CHECKPOINT_NAMES = ("best", "last")
METRICS = "metrics.json"
SWEEP_STOPPED = "sweep_stopped"


def checkpoint(run_dir: Path, which: str = "last") -> Path:
    """`<run dir>/checkpoints/<which>.ckpt`."""
    return Path(run_dir) / CHECKPOINTS / f"{which}.ckpt"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / HYDRA_DIR).is_dir()


def saved_config_file(run_dir: Path) -> Path:
    return Path(run_dir) / HYDRA_DIR / "config.yaml"


def saved_overrides_file(run_dir: Path) -> Path:
    return Path(run_dir) / HYDRA_DIR / "overrides.yaml"


def read_metrics(run_dir: Path) -> dict:
    """metrics.json as a dict; {} when there is none or it cannot be read."""
    try:
        return json.loads((Path(run_dir) / METRICS).read_text())
    except (OSError, ValueError):
        return {}
