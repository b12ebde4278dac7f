"""Helpers: nnlab through its command line, or in-process through Hydra's compose API."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nnlab.train import CONFIG_DIR


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def run_dirs(log_dir: Path) -> list[Path]:
    """Every run dir under a log dir: the folders holding a .hydra/ config."""
    return sorted(path.parent for path in log_dir.rglob(".hydra"))


def is_finite_number(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run `python -m nnlab.train` with overrides; runs land in tmp_path/logs."""

    def run(*overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "nnlab.train", *(["-m"] if multirun else [])]
        command += [f"paths.log_dir={tmp_path / 'logs'}", *overrides]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)

    return run


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., DictConfig]:
    """The composed config for some overrides, with its run dir at tmp_path/run."""

    def make(*overrides: str) -> DictConfig:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(
                config_name="train", overrides=[f"paths.output_dir={tmp_path / 'run'}", *overrides]
            )

    return make
