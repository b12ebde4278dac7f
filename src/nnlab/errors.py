"""How a run stops early, and how every nnlab command ends: one line on stderr, one exit status.

`exits()` is that one place. Each command's `main` runs inside it; whatever stops the command
(a `RunStopped`, a config Hydra cannot compose, a constructor's `BadValue`) becomes
`nnlab: <what>: <why>` and its exit status: 2 for bad input, 3 for a diverged run, 4 for a
full disk, 128 + the signal's number when interrupted. Anything else is a bug and keeps its
traceback (exit 1). HYDRA_FULL_ERROR=1 shows the traceback of everything.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from nnlab.checks import NO_VALUE, BadValue, DataNotFound

# nnlab asks Hydra to raise its errors (HYDRA_FULL_ERROR=1) so that they get nnlab's one line;
# the user's own choice travels in NNLAB_FULL_ERROR, to this process and those it starts.
FULL_ERROR, USER_FULL_ERROR = "HYDRA_FULL_ERROR", "NNLAB_FULL_ERROR"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)  # no space left; the user's quota reached


class RunStopped(Exception):
    """A run that ends early for a reason the user can act on: one line, no traceback.

    `exit_code` is the process's exit status for a single run; in a sweep the job fails alone.
    `status` is what metrics.json says.
    """

    exit_code = 1

    @property
    def status(self) -> str:
        return f"failed: {self}"

    def __reduce__(self) -> tuple[type, tuple[Any, ...]]:
        # Parallel sweeps pickle a failed job's exception back to the sweep's process.
        return (type(self), self.args)


class BadInput(RunStopped):
    """Input that cannot work (a config value, a missing dataset), found before training."""

    exit_code = 2


class ConfigError(BadInput):
    """`key=value` cannot work; `expected` says what would."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        self.key, self.value, self.expected = key, value, expected
        super().__init__(key, value, expected)

    def __str__(self) -> str:
        shown = "" if self.value is NO_VALUE else f"={_shown(self.value)}"
        return f"bad config {self.key}{shown}: {self.expected}"


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
        super().__init__(step, metric, value, checkpoint)

    def __str__(self) -> str:
        kept = f"; the last good checkpoint is {self.checkpoint}" if self.checkpoint else ""
        return f"diverged: {self.metric} is {self.value} at step {self.step}{kept}"


class Interrupted(RunStopped):
    """SIGINT (Ctrl-C) or SIGTERM (a cluster's pre-emption) arrived; the run saved where it was."""

    status = "interrupted"

    def __init__(self, signum: int, step: int | None, checkpoint: Path | str | None) -> None:
        """`step` None: the signal came outside training (start-up, the end), and `checkpoint`
        is the one already there, if any."""
        self.signum, self.step = signum, step
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.exit_code = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
        super().__init__(signum, step, self.checkpoint)

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        if self.checkpoint is None:
            return f"interrupted by {name} before training started; run the command again"
        where = "" if self.step is None else f" at step {self.step}; saved {self.checkpoint}"
        return f"interrupted by {name}{where}. Resume with the same command plus ckpt_path=last"


class Pruned(RunStopped):
    """The search's pruner stopped the trial: its metric was behind the other trials'."""

    status = "pruned"

    def __init__(self, epoch: int, metric: str, value: float) -> None:
        self.epoch, self.metric, self.value = epoch, metric, value
        super().__init__(epoch, metric, value)

    def __str__(self) -> str:
        return f"pruned at epoch {self.epoch}: {self.metric} {self.value:.4g}"


class DiskFull(RunStopped):
    """The disk (or the user's quota) filled up while the run wrote its files. Every file is
    written under a temporary name and renamed, so what was written before stays whole."""

    exit_code = 4

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(where)

    def __str__(self) -> str:
        return (
            f"disk full: no space left to write {self.where}; files written before are whole. "
            "Free some space, then finish the run with ckpt_path=last"
        )

    @property
    def status(self) -> str:
        return f"failed: disk full while writing {self.where}"


class RunDirGone(RunStopped):
    """The run's own dir was removed while the run ran: nothing of it can be written, or kept."""

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(where)

    def __str__(self) -> str:
        return f"the run dir {self.where} was removed while the run ran; nothing of it is kept"


class NotRun(RunStopped):
    """A sweep's job that starts after a signal stopped the sweep: it ends before any work."""

    status = "not run: the sweep was stopped before this job started"

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(signal_name)

    def __str__(self) -> str:
        return f"not run: the sweep was stopped by {self.signal_name}"


def full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1)."""
    return os.environ.get(USER_FULL_ERROR, os.environ.get(FULL_ERROR)) == "1"


def stopped(error: BaseException) -> RunStopped | None:
    """What `error` means for the user, found along its chain of causes: a RunStopped, a
    dataset or value refused, a config Hydra could not compose, a disk that filled up; None
    for anything else (a bug)."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    refusals = (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        MissingMandatoryValue,
        InterpolationResolutionError,  # ${oc.env:UNSET}, while Hydra places the run
    )
    seen: BaseException | None = error
    while seen is not None:  # nnlab's own, first: one raised inside a resolver is wrapped
        if isinstance(seen, RunStopped):
            return seen
        seen = seen.__cause__ or seen.__context__
    seen = error
    while seen is not None:
        if isinstance(seen, DataNotFound):
            return BadInput(str(seen))
        if isinstance(seen, BadValue):
            return ConfigError(seen.key, seen.value, seen.expected)
        if isinstance(seen, refusals):
            return composition_error(seen)
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return DiskFull(str(seen.filename or "the run's files"))
        if isinstance(seen, OSError):
            from nnlab.run.layout import refused_run_dir

            refused = refused_run_dir(seen)
            if refused is not None:
                return refused
        seen = seen.__cause__ or seen.__context__
    return None


def composition_error(error: Exception) -> ConfigError:
    """Hydra's refusal to compose, as the override it refused and what exists instead."""
    from hydra.errors import MissingConfigException, OverrideParseException
    from omegaconf.errors import (
        ConfigAttributeError,
        ConfigKeyError,
        InterpolationResolutionError,
        MissingMandatoryValue,
    )

    if isinstance(error, OverrideParseException):
        from nnlab.overrides import parse_error

        return parse_error(error)
    if isinstance(error, MissingConfigException):
        from nnlab.train import CONFIG_DIR

        group, _, option = str(error.missing_cfg_file).rpartition("/")
        # Hydra lists the options for one choice, not for a list of them (logger=[a,b]).
        options = error.options or sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
        available = ", ".join(options) or "none"
        return ConfigError(group or "config", option, f"no such option; available: {available}")
    if isinstance(error, InterpolationResolutionError):
        cause: BaseException | None = error  # the resolver's own error, under OmegaConf's
        while isinstance(cause, InterpolationResolutionError):
            cause = cause.__cause__ or cause.__context__
        text = cause.args[0] if isinstance(cause, KeyError) and cause.args else str(error.msg)
        return ConfigError(str(error.full_key or "config"), NO_VALUE, str(text).splitlines()[0])
    cause = error if isinstance(error, MissingMandatoryValue) else error.__cause__
    if isinstance(cause, MissingMandatoryValue):  # a required value no config set (task_name)
        key = str(cause.full_key or "config")
        return ConfigError(key, NO_VALUE, "no value: the experiment= sets it, or set it yourself")
    if isinstance(cause, ConfigKeyError | ConfigAttributeError) and cause.full_key:
        return _unknown_key(str(cause.full_key), cause.parent_node)
    # Hydra's advice sits on its later lines ("Either remove + prefix: ..."): one line, whole.
    text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return ConfigError("overrides", NO_VALUE, text)


def _unknown_key(full_key: str, parent: Any) -> ConfigError:
    """The refused key, and the keys that exist beside it (in the node Hydra looked in: no
    second compose). Hydra's error does not keep the refused value, so the message has none."""
    from difflib import get_close_matches

    parent_key = full_key.rpartition(".")[0]
    existing = [str(k) for k in parent if str(k) != "hydra"] if parent is not None else []
    name = full_key.rpartition(".")[2]
    takes = _arguments_of(parent)  # a Trainer argument trainer/ does not list, for instance
    close = get_close_matches(name, [*existing, *takes], n=1)
    hint = f"did you mean {close[0]}?" if close else f"a new key needs a +: +{full_key}=..."
    if name in takes:
        hint = f"{parent['_target_'].rpartition('.')[2]} takes it: add it with +{full_key}=..."
    listed = ", ".join(existing) or "nothing"
    where = parent_key or "the config"
    return ConfigError(full_key, NO_VALUE, f"unknown key; {where} has: {listed} ({hint})")


def _arguments_of(node: Any) -> list[str]:
    """The arguments the node's `_target_` takes, if it names one that imports."""
    target = node.get("_target_") if hasattr(node, "get") else None
    if not isinstance(target, str):
        return []
    from nnlab.run.build import accepted_keys, locate

    try:
        return accepted_keys(locate(target, "_target_")) or []
    except ConfigError:  # building the node says why it does not import
        return []


def stop(error: RunStopped, program: str = "nnlab") -> NoReturn:
    """End the process as nnlab ends on `error`: one line on stderr and its exit status."""
    if full_error():
        raise error
    print(f"{program}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(error.exit_code)


@contextmanager
def raised_as_known() -> Iterator[None]:
    """For Python callers: an error that means something to the user raised as its RunStopped
    (Hydra's refusal as ConfigError); missing data stays FileNotFoundError, a bug as it is."""
    try:
        yield
    except (RunStopped, DataNotFound):
        raise
    except Exception as error:
        known = stopped(error)
        if known is None:
            raise
        raise known from None


@contextmanager
def exits(program: str = "nnlab") -> Iterator[None]:
    """Run a command's body; whatever stops it ends the process as `stop` does."""
    os.environ.setdefault(USER_FULL_ERROR, "1" if full_error() else "0")
    os.environ[FULL_ERROR] = "1"
    try:
        yield
    except BrokenPipeError:
        try:
            sys.stdout.write("\n")  # is stdout the broken pipe? (else a newline, then the bug)
            sys.stdout.flush()
        except BrokenPipeError:  # `nnlab-train --help | head`: stdout's reader has gone
            with suppress(OSError, ValueError):  # as Python's docs advise
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(128 + getattr(signal, "SIGPIPE", 13)) from None
        raise  # another pipe than stdout's: a bug, with its traceback
    except Exception as error:
        known = stopped(error)
        if known is None:
            raise  # a bug: its traceback, exit status 1
        stop(known, program)
