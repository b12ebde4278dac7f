"""What a run shows on the console, and what it keeps in train.log.

The console gets nnlab's own lines, every warning, the bar and the summary; train.log gets
everything, Lightning's notices and the model summary included. Hydra's logging config puts
these filters and handlers in place (conf/hydra/default.yaml).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nnlab.errors import DISK_FULL

DETAILS = "nnlab.details"  # lines for train.log only: what was built, notices, the model summary
WARNINGS = "py.warnings"  # Python's warnings, as logging.captureWarnings names them


class ConsoleLines(logging.Filter):
    """The console's share of a run's log: nnlab's own lines and every warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        own = record.name == "nnlab" or record.name.startswith("nnlab.")
        return own and not record.name.startswith(DETAILS)


class HydraLines(logging.Filter):
    """Hydra's own console lines, less the joblib launcher's dump of its Parallel() settings."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Joblib.Parallel(")


class ConsoleFormat(logging.Formatter):
    """Console lines as plain text (train.log keeps times and logger names); a warning or an
    error says what it is."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message


class LogFile(logging.FileHandler):
    """train.log's handler. With the disk full, a line that cannot be written is dropped: the
    run's own message says the disk is full, where logging would print a traceback per line."""

    def handleError(self, record: logging.LogRecord) -> None:
        if isinstance(sys.exc_info()[1], OSError) and sys.exc_info()[1].errno in DISK_FULL:
            return
        super().handleError(record)


def quiet_console() -> None:
    """Console logs at WARNING and above: a sweep's parallel jobs share one terminal, and each
    prints its one-line result on stdout."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler or "colorlog" in type(handler).__module__:
            handler.setLevel(logging.WARNING)


# Warnings about what nnlab's own setup does on purpose, which a user cannot act on.
EXPECTED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning 2.6 inside torch 2.14
    # nnlab lowers the interval to the epoch's length (run/callbacks.py, TrainingGuard)
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r"Checkpoint directory .* exists and is not empty",  # resuming in place
    r"You requested to overfit but enabled train dataloader shuffling",  # debug=overfit
    # a run outside SLURM on a machine that has it (a login node, a local sweep); inside a
    # SLURM job Lightning reads the job's variables and says nothing
    r"The `srun` command is available on your system but is not used",
)


def quiet_libraries() -> None:
    """Lightning's lines through the root logger only (importing it adds a console handler of
    its own, which printed each line twice); without its advert for a cloud logger, the
    warnings nnlab's own setup causes, and threads' tracebacks for a full disk (the run says
    that the disk is full itself, in one line)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: not str(record.msg).startswith("💡 Tip")
    )
    for message in EXPECTED_WARNINGS:  # also where a caller builds a run itself (benchmarks)
        warnings.filterwarnings("ignore", message=message)
    threading.excepthook = _thread_errors_but_a_full_disk


@contextmanager
def warnings_logged() -> Iterator[None]:
    """A run's Python warnings (Lightning's advice among them) as log lines, on the console and
    in train.log, each once per run; less those nnlab's own setup causes. Python printed them
    on stderr only, with a source path, and only in a process's first run."""
    # Python's own filters stay (what it ignores, the user's -W, the libraries'); adding one
    # resets each module's "already shown" registry, so a warning shows again in a new run.
    for message in EXPECTED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    previous, warnings.showwarning = warnings.showwarning, _log_warning
    try:
        yield
    finally:
        warnings.showwarning = previous


def _log_warning(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
    logging.getLogger(WARNINGS).warning("%s", str(message).strip())


RUNNING: set[Path] = set()  # the dirs of the runs this process runs now (nnlab.train.train)


@contextmanager
def running_in(run_dir: Path) -> Iterator[None]:
    """While a run runs: if its dir is removed, its writer threads' errors are left to the
    run's own one line (nnlab.errors.RunDirGone)."""
    RUNNING.add(Path(run_dir).absolute())
    try:
        yield
    finally:
        RUNNING.discard(Path(run_dir).absolute())


def _thread_errors_but_a_full_disk(args: threading.ExceptHookArgs) -> None:
    error = args.exc_value
    if isinstance(error, OSError) and error.errno in DISK_FULL:
        return  # TensorBoard's writer thread, on a full disk
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        path = Path(os.fsdecode(error.filename)).absolute()
        if any(path.is_relative_to(d) and not d.exists() for d in RUNNING):
            return  # its run's dir was removed: the run says so itself, in one line
    threading.__excepthook__(args)
