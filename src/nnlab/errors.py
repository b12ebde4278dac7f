"""The ways a run stops early, each with one message and its own exit status, and `stop`, the
one place where nnlab turns them into a line on stderr and that status."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn

from hydra.errors import CompactHydraException

from nnlab.checks import NO_VALUE, BadValue

FULL_ERROR = "HYDRA_FULL_ERROR"  # =1: tracebacks instead of one-line messages, as in Hydra
# nnlab's commands set HYDRA_FULL_ERROR=1 so that Hydra raises its errors to them (nnlab.cli);
# the user's own choice travels in this variable, to this process and the ones it starts.
USER_FULL_ERROR = "NNLAB_FULL_ERROR"


class RunStopped(CompactHydraException):
    """A run that ends early for a reason the user can act on: printed as one line, no traceback.

    `exit_code` is the process's exit status for a single run; in a sweep the job fails alone.
    """

    exit_code = 1
    status = "failed"  # what metrics.json's `status` says


class ConfigError(RunStopped):
    """A config value that cannot work, found before any training."""

    exit_code = 2

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = "" if self.value is NO_VALUE else f"={_shown(self.value)}"
        return f"bad config {self.key}{shown}: {self.expected}"

    def __reduce__(self) -> tuple[type, tuple[str, Any, str]]:
        # Parallel sweeps pickle a failed job's exception back to the parent process.
        return (type(self), (self.key, self.value, self.expected))

    @property
    def status(self) -> str:
        return f"failed: {self}"

    @classmethod
    def from_bad_value(cls, error: BadValue, path: str = "") -> ConfigError:
        """A constructor's `BadValue`, its argument put under the config node `path`."""
        return cls(_join(path, error.key), error.value, error.expected)

    def under(self, path: str) -> ConfigError:
        """The same error, its key under a config node: `hidden_nodes` -> `model.hidden_nodes`."""
        return ConfigError(_join(path, self.key), self.value, self.expected)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path and key else path or key


def _shown(value: Any, limit: int = 200) -> str:
    """A value as the message shows it: repr, cut short (a pasted 5,000-character value)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"


class Diverged(RunStopped):
    """The training loss became NaN or infinite."""

    exit_code = 3
    status = "diverged"

    def __init__(self, step: int, metric: str, value: float, checkpoint: str | None) -> None:
        self.step, self.metric, self.value, self.checkpoint = step, metric, value, checkpoint
        super().__init__(str(self))

    def __str__(self) -> str:
        kept = f"; the last good checkpoint is {self.checkpoint}" if self.checkpoint else ""
        return f"diverged: {self.metric} is {self.value} at step {self.step}{kept}"

    def __reduce__(self) -> tuple[type, tuple[int, str, float, str | None]]:
        return (type(self), (self.step, self.metric, self.value, self.checkpoint))


class Interrupted(RunStopped):
    """SIGINT (Ctrl-C) or SIGTERM (a cluster's pre-emption) arrived; the run saved where it was."""

    status = "interrupted"

    def __init__(self, signum: int, step: int, checkpoint: Path | str) -> None:
        self.signum, self.step, self.checkpoint = signum, step, str(checkpoint)
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
        super().__init__(str(self))

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return (
            f"interrupted by {name} at step {self.step}; saved {self.checkpoint}. "
            "Resume with the same command plus ckpt_path=last"
        )

    def __reduce__(self) -> tuple[type, tuple[int, int, str]]:
        return (type(self), (self.signum, self.step, self.checkpoint))


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left; the user's quota reached


class DiskFull(RunStopped):
    """The disk (or the user's quota) filled up while the run wrote its files. Every file is
    written under a temporary name and renamed, so what was written before stays whole."""

    exit_code = 4

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(str(self))

    def __str__(self) -> str:
        return (
            f"disk full: no space left to write {self.where}; files written before are whole. "
            "Free some space, then finish the run with ckpt_path=last"
        )

    @property
    def status(self) -> str:
        return f"failed: disk full while writing {self.where}"

    @classmethod
    def from_os_error(cls, error: OSError) -> DiskFull:
        return cls(str(error.filename) if error.filename else "the run's files")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.where,))


class NotRun(RunStopped):
    """A sweep's job that starts after a signal stopped the sweep: it ends before any work."""

    status = "not run: the sweep was stopped before this job started"

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"not run: the sweep was stopped by {signal_name}")

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.signal_name,))


class DataNotFound(RunStopped):
    """A dataset that is nowhere nnlab looked: where it looked, and the ways to get it."""

    exit_code = 2

    def __init__(self, title: str, looked: list[str], note: str, ways: list[str]) -> None:
        self.title, self.looked, self.note, self.ways = title, looked, note, ways
        super().__init__(str(self))

    def __str__(self) -> str:
        numbered = "; ".join(f"({i}) {way}" for i, way in enumerate(self.ways, start=1))
        looked = " and ".join(self.looked)
        return f"{self.title} not found: looked in {looked}; {self.note}. Get it by {numbered}"

    @property
    def status(self) -> str:
        return f"failed: {self}"

    def __reduce__(self) -> tuple[type, tuple[str, list[str], str, list[str]]]:
        return (type(self), (self.title, self.looked, self.note, self.ways))


def full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1)."""
    return os.environ.get(USER_FULL_ERROR, os.environ.get(FULL_ERROR)) == "1"


def stop(error: RunStopped, program: str = "nnlab") -> NoReturn:
    """End the process as nnlab ends on `error`: one line on stderr and its exit status
    (a traceback instead, with HYDRA_FULL_ERROR=1)."""
    if full_error():
        raise error
    print(f"{program}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_code)
