"""Helpers: nnlab through its command line, or in-process through Hydra's compose API."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from nnlab.train import CONFIG_DIR

# pytest-xdist runs one worker per core: one torch thread each, in-process and in the nnlab
# commands the tests start, so that workers do not fight over cores.
os.environ.setdefault("NNLAB_THREADS", "1")

Completed = subprocess.CompletedProcess


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def run_dirs(log_dir: Path) -> list[Path]:
    """Every run dir under a log dir: the folders holding a .hydra/ config."""
    return sorted(path.parent for path in log_dir.rglob(".hydra"))


def only_run(cli: Callable[..., Completed], log_dir: Path, *overrides: str) -> Path:
    """Run the command with its runs in `log_dir`, which then holds exactly one: its dir."""
    result = cli(*overrides, f"paths.log_dir={log_dir}")
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(log_dir)
    return run_dir


def assert_same_completed_metrics(a: Path, b: Path, **tolerance: float) -> None:
    """Both runs completed, and every metric of one equals the other's within `tolerance`."""
    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    assert metrics_a.pop("status") == metrics_b.pop("status") == "completed"
    assert metrics_a == pytest.approx(metrics_b, **tolerance)


def sigterm_after_first_checkpoint(command: list[str], logs: Path, cwd: Path) -> tuple[Path, str]:
    """Run `command`, SIGTERM it once a run under `logs` has written last.ckpt, and check that
    it stopped as interrupted, with 143. The run dir, and what the command printed on stderr."""
    process = subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not list(logs.glob("*/runs/*/checkpoints/last.ckpt")) and process.poll() is None:
        assert time.monotonic() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM, stderr
    (run_dir,) = run_dirs(logs)
    assert read_metrics(run_dir)["status"] == "interrupted"
    return run_dir, stderr


def sigterm_at_validation(step: int) -> Callable[[Any], None]:
    """A rings task's `on_validation_start` that sends this process SIGTERM at `step`: a run
    stopped at a known place, in this process (patch it onto RingsTask)."""

    def on_validation_start(self: Any) -> None:
        if self.global_step == step:
            os.kill(os.getpid(), signal.SIGTERM)

    return on_validation_start


def is_finite_number(value: object) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def run_command(main: Callable[[], object], arguments: list[str], cwd: Path) -> Completed:
    """Run one of nnlab's commands (its `main`) in this process, as its console script runs it:
    `arguments` as the command line, in `cwd`. Its exit status, stdout and stderr, as
    subprocess.run gives them, without paying a new process's ~5 s of imports.

    What the command changes in this process is put back: the environment, the working
    directory, sys.argv, torch's threads, the root logger's handlers and Hydra's global state.
    """
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from nnlab.api import restored_process_state

    stdout, stderr = io.StringIO(), io.StringIO()
    environ, argv, before = dict(os.environ), list(sys.argv), Path.cwd()
    sys.argv = ["nnlab", *arguments]
    os.chdir(cwd)
    try:
        with restored_process_state(), redirect_stdout(stdout), redirect_stderr(stderr):
            status = _exit_status(main)
    finally:
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None  # Hydra's main leaves its job's config set
        os.environ.clear()
        os.environ.update(environ)
        sys.argv = argv
        os.chdir(before)
    return Completed(arguments, status, stdout.getvalue(), stderr.getvalue())


def _exit_status(main: Callable[[], object]) -> int:
    """The status the interpreter would exit with after `main()`, printing what it would."""
    try:
        main()
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        print(exit.code, file=sys.stderr)
        return 1
    except Exception:  # the interpreter's own end: the traceback, and status 1
        traceback.print_exc()
        return 1
    return 0


# Most tests read a run's metrics, files or exit status; the task's analysis after testing
# (figures, tables, predictions) costs ~0.3 s a rings run, a third of a short one, and has tests
# of its own. So the in-process runs of `cli` and `config` skip it unless a test asks for it.
ANALYSIS_OFF = "analyse=false"


@pytest.fixture
def cli(tmp_path: Path) -> Callable[..., Completed]:
    """Run `nnlab-train` with overrides, in this process; runs land in tmp_path/logs.

    A sweep (`multirun=True`) runs its jobs one after another here (Hydra's basic launcher)
    unless the overrides name a launcher: `process_cli` tests the parallel one. The runs skip
    the task's analysis unless the test asks for it (`analyse=True`; see `ANALYSIS_OFF`).
    """
    from nnlab.train import main

    def run(*overrides: str, multirun: bool = False, analyse: bool = False) -> Completed:
        launcher = (
            []
            if any(o.startswith("hydra/launcher=") for o in overrides)
            else ["hydra/launcher=basic"]
        )
        flags = ["-m", *launcher] if multirun else []
        analysis = [] if analyse else [ANALYSIS_OFF]
        arguments = [*flags, f"paths.log_dir={tmp_path / 'logs'}", *analysis, *overrides]
        return run_command(main, arguments, tmp_path)

    return run


@pytest.fixture
def process_cli(tmp_path: Path) -> Callable[..., Completed]:
    """Run `python -m nnlab.train` with overrides in a new process; runs land in tmp_path/logs.
    For what only a process shows: signals, parallel workers, DDP, the console as printed."""

    def run(*overrides: str, multirun: bool = False) -> Completed:
        command = [sys.executable, "-m", "nnlab.train", *(["-m"] if multirun else [])]
        command += [f"paths.log_dir={tmp_path / 'logs'}", *overrides]
        return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=900)

    return run


@pytest.fixture
def config(tmp_path: Path) -> Callable[..., DictConfig]:
    """The composed config for some overrides, with its run dir at tmp_path/run; without the
    task's analysis unless the test asks for it (`analyse=True`; see `ANALYSIS_OFF`)."""

    def make(*overrides: str, analyse: bool = False) -> DictConfig:
        first = [f"paths.output_dir={tmp_path / 'run'}", *([] if analyse else [ANALYSIS_OFF])]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            return compose(config_name="train", overrides=[*first, *overrides])

    return make


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx file as MNIST ships them: 0, 0, type 8 (ubyte), rank, big-endian sizes, data."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def blocky_digits(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Easy 28x28 images: class k is a bright 7x7 block at the k-th of 10 places, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, count)
    images = rng.integers(0, 60, (count, 28, 28))
    for image, label in zip(images, labels, strict=True):
        row, column = divmod(int(label), 5)
        image[3 + 12 * row : 10 + 12 * row, 1 + 5 * column : 8 + 5 * column] = 230
    return images.astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data_dir with idx files of 400 training and 200 test blocky digits, under both MNIST/
    and FashionMNIST/, so every image experiment finds data there without a download."""
    data_dir = tmp_path_factory.mktemp("data")
    for folder in ("MNIST", "FashionMNIST"):
        raw = data_dir / folder / "raw"
        raw.mkdir(parents=True)
        for prefix, count, seed in (("train", 400, 1), ("t10k", 200, 2)):
            images, labels = blocky_digits(count, seed)
            write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return data_dir


def trained(cfg: DictConfig) -> dict[str, float | str]:
    """Train `cfg` in this process (nnlab.train.train, the command's one path); its metrics,
    with their status, as metrics.json has them. What the run changes in this process is put
    back, as nnlab.api.train puts it back."""
    from nnlab.api import restored_process_state
    from nnlab.train import train

    with restored_process_state():
        return train(cfg).metrics


def replace_launch(monkeypatch: pytest.MonkeyPatch, make_launch: Callable[..., Any]) -> None:
    """Hydra's launcher as a sweep builds it, with its `launch` replaced by
    `make_launch(real_launch)`: for tests of what a sweeper does with a launch's outcome."""
    from hydra.core.plugins import Plugins

    real_instantiate = Plugins.instantiate_launcher

    def instantiate(self: Any, *args: Any, **kwargs: Any) -> Any:
        launcher = real_instantiate(self, *args, **kwargs)
        launcher.launch = make_launch(launcher.launch)
        return launcher

    monkeypatch.setattr(Plugins, "instantiate_launcher", instantiate)
