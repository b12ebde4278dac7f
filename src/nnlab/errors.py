"""The ways a run stops early, each with one message and its own exit status."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException


class RunStopped(CompactHydraException):
    """A run that ends early for a reason the user can act on: printed as one line, no traceback.

    `exit_code` is the process's exit status for a single run; in a sweep the job fails alone.
    """

    exit_code = 1
    status = "failed"  # what metrics.json's `status` says


class _NoValue:
    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE: Any = _NoValue()


class ConfigError(RunStopped):
    """A config value that cannot work, found before any data are loaded."""

    exit_code = 2

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(str(self))

    def __str__(self) -> str:
        shown = "" if self.value is NO_VALUE else f"={self.value!r}"
        return f"bad config {self.key}{shown}: {self.expected}"

    def __reduce__(self) -> tuple[type, tuple[str, Any, str]]:
        # Parallel sweeps pickle a failed job's exception back to the parent process.
        return (type(self), (self.key, self.value, self.expected))

    @property
    def status(self) -> str:
        return f"failed: {self}"

    def under(self, path: str) -> ConfigError:
        """The same error, its key under a config node: `hidden_nodes` -> `model.hidden_nodes`."""
        return ConfigError(f"{path}.{self.key}" if self.key else path, self.value, self.expected)


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
