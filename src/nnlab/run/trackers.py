"""MLflow and Weights & Biases, beside TensorBoard: what their Lightning loggers leave to nnlab.

Lightning's MLFlowLogger and WandbLogger log the metrics and the hyperparameters. nnlab adds
the figures (an MLflow artifact, a W&B image), keeps both off the network unless asked
(MLflow's telemetry off by default; W&B offline unless the user has logged in; both set by
the resolvers their configs use), and ends the W&B run, which Lightning leaves open. Neither
package is imported unless its logger is in the run.
"""

from __future__ import annotations

import netrc
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


def wandb_offline() -> bool:
    """W&B runs offline unless this machine has the user's credentials (WANDB_API_KEY, or a
    ~/.netrc entry from `wandb login`); WANDB_MODE=offline always wins. Asks no server. (The
    resolver of conf/logger/wandb.yaml, which also keeps W&B's console lines off unless the
    user's environment says otherwise: nnlab prints the run's summary.)"""
    os.environ.setdefault("WANDB_SILENT", "true")
    if os.environ.get("WANDB_MODE") in ("offline", "dryrun", "disabled"):
        return True
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return False
    host = urlsplit(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).netloc
    try:
        entry = netrc.netrc(os.path.expanduser(os.environ.get("NETRC", "~/.netrc")))
        credentials = entry.authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return True
    return not (credentials and credentials[2])


def mlflow_store(folder: str) -> str:
    """The URI of a local MLflow store in `folder` (the resolver of conf/logger/mlflow.yaml):
    the folder made (SQLite makes its file, not the folder), MLflow's telemetry off unless the
    user's environment says otherwise."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    path = Path(str(folder)).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path / 'mlflow.db'}"


def log_figure(loggers: Iterable[Any], name: str, path: Path, step: int) -> None:
    """A saved figure, as an MLflow artifact under figures/ and a W&B image."""
    for logger in loggers:
        kind = type(logger).__name__
        if kind == "MLFlowLogger":
            logger.experiment.log_artifact(logger.run_id, str(path), artifact_path="figures")
        elif kind == "WandbLogger":
            logger.log_image(key=f"figures/{name}", images=[str(path)], step=step)


def finish(loggers: Iterable[Any]) -> None:
    """End the W&B run: Lightning's WandbLogger leaves it open, and the next run of the same
    process (a notebook, a sweep's worker) would log into it."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":  # its run exists: nnlab logged hparams
            logger.experiment.finish()
