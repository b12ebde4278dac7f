"""A sweep (a grid or a search) that stops whole on a signal, and says how it ended.

Ctrl-C reaches every process of the terminal; SIGTERM (`kill`, a cluster's pre-emption) may
reach only the sweep's own. Either way, the jobs that are training save `last.ckpt` and end
`interrupted`, no job starts after the signal (each ends at once as `not run`), and the sweep
prints one line saying how many jobs ended which way, then exits 128 + the signal's number.

How, since Hydra's launchers have no stop of their own (joblib's would kill its workers, and
the runs they were saving with them):
- While it launches, the sweep's process blocks SIGINT and SIGTERM, and the processes it starts
  (joblib's workers) inherit the block. A run unblocks them only while it trains, where
  nnlab.run.callbacks.GracefulStop turns them into a saved, interrupted run; an idle worker
  keeps the signal pending instead of dying (a dead worker breaks joblib's whole pool).
- The sweep's process catches the signals (a handler, and a thread that waits for them while
  every thread blocks them). On one it writes the sweep dir's
  `sweep_stopped` mark, which every job reads before it starts, and passes SIGTERM on to the
  joblib workers. A job that a signal interrupted writes the same mark (in the basic launcher,
  jobs run in the sweep's own process, which then receives the signal itself).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnlab.errors import ConfigError, stop
from nnlab.run import layout

STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextmanager
def interrupting(trainer: Any, checkpoint: Path) -> Iterator[None]:
    """While a run validates its final weights, tests and analyses (after training, whose own
    stop is nnlab.run.callbacks.GracefulStop), a signal ends it as Interrupted at once: the
    run records `interrupted`, and `ckpt_path=last` finishes what is missing. In a sweep's job
    the signals stay blocked there, and the sweep stops after it."""
    from nnlab.errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        # Saved again: the one saved at the last validation predates the epoch's train values.
        trainer.save_checkpoint(checkpoint, weights_only=False)
        raise Interrupted(signum, trainer.global_step, checkpoint)

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def interrupted_at_once(last: Path) -> Iterator[None]:
    """Around a single run, outside its training (imports, building, a resume's restore, the
    sanity check, and the end), a signal ends the run at once as Interrupted: it records
    `interrupted` and releases its lock. Python's default killed the process where it stood,
    leaving a run dir without metrics.json and a lock on it. `last`: the run's last.ckpt,
    which a resume takes if it is there."""
    from nnlab.errors import Interrupted

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise _Signalled(signum)  # past every `except Exception` on its way, as Ctrl-C goes

    previous = {signum: signal.signal(signum, interrupt) for signum in STOP_SIGNALS}
    try:
        yield
    except _Signalled as signalled:
        raise Interrupted(signalled.signum, None, last if last.is_file() else None) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Signalled(BaseException):
    """A stop signal, raised where the run stood: a BaseException, so that no handler of
    errors on the way (a download's, a build's) takes it for one of its own."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


SWEEP_PID = "NNLAB_SWEEP_PID"  # set by the sweepers for their jobs: the sweep's own process
SWEEP_DIR = "NNLAB_SWEEP_DIR"  # and its dir, which a trial resumed in an earlier one's lacks


def sweep_of_this_job() -> Path:
    """The dir of the sweep that launched this job, whose stop mark stops it: its own sweep
    dir, except for a search's trial resumed in place in an earlier sweep's dir."""
    from hydra.core.hydra_config import HydraConfig

    return Path(os.environ.get(SWEEP_DIR) or HydraConfig.get().sweep.dir)


GRACE_S = 5  # for a training job to save last.ckpt once its sweep is gone


def sweep_is_gone() -> bool:
    """Whether this job's sweep process has died (a kill -9: no handler ran, no mark)."""
    pid = int(os.environ.get(SWEEP_PID, "0") or 0)
    return bool(pid) and pid != os.getpid() and not layout.process_alive(pid)


def end_with_the_sweep() -> None:
    """In a job run by a worker process: a thread that ends the process when the sweep's own
    process is gone. After a kill -9 of a sweep, joblib's workers stayed (870 MB each, minutes
    later) and a queued job still started. The thread sends this process SIGTERM, which a
    training job turns into a saved, interrupted run (nnlab.run.callbacks.GracefulStop); a
    process that has not ended GRACE_S seconds later is killed."""
    pid = int(os.environ.get(SWEEP_PID, "0") or 0)
    if not pid or pid == os.getpid():  # no sweep, or the jobs run in the sweep's process
        return

    def watch() -> None:
        while layout.process_alive(pid):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_S)
        os.kill(os.getpid(), signal.SIGKILL)  # its signals were blocked: an idle worker

    threading.Thread(target=watch, name="nnlab-sweep-watch", daemon=True).start()


def is_cluster_job() -> bool:
    """Whether this job is a SLURM job of its own, submitted by Hydra's submitit launcher
    (submitit's batch script sets SUBMITIT_EXECUTOR; its local executor says `local`): a
    signal to it is the cluster's (a pre-emption, a requeue, a time limit, `scancel`), for this
    job alone, and the sweep's other jobs go on."""
    return os.environ.get("SUBMITIT_EXECUTOR") == "slurm" and "SLURM_JOB_ID" in os.environ


def take_the_clusters_signals() -> None:
    """In a SLURM job: submitit asks sbatch for SIGUSR2 before the time limit, which its own
    handler turned into an error in the middle of training (no last.ckpt saved, the run
    `failed`). It is a stop like SIGTERM, and the job is requeued (requeue_and_exit)."""
    signal.signal(signal.SIGUSR2, lambda signum, frame: os.kill(os.getpid(), signal.SIGTERM))


def requeue_and_exit(signum: int) -> None:
    """End a SLURM job that a signal interrupted (its last.ckpt saved, its metrics.json
    `interrupted`) so that it runs again and resumes in place, unless it was cancelled:
    - requeued by SLURM (`scontrol requeue`, a pre-emption): SLURM counted a restart;
    - only signalled (`scancel --signal=TERM`, a pre-emption's warning, submitit's SIGUSR2
      before the time limit): still RUNNING, and it asks SLURM to requeue it, as submitit
      does for its own signal;
    - cancelled (`scancel`), out of time, or not requeueable (`--no-requeue`): returns, and
      the job ends `interrupted`, with a result for the sweep.
    A job that runs again leaves without a result, which submitit's launcher would take for
    the job's end: the launcher waits for the requeued job instead. (SIGTERM in all cases, so
    the state tells them apart: a cancelled job is COMPLETING, and requeuing it would undo the
    cancel.) Only the job's first task asks for the requeue, as submitit's does."""
    import subprocess

    job = str(layout.slurm_job())
    try:
        shown = subprocess.run(
            ["scontrol", "show", "job", job], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return
    fields = dict(word.split("=", 1) for word in shown.split() if "=" in word)
    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    if int(fields.get("Restarts", "0") or 0) <= restarts:  # not requeued by SLURM
        if fields.get("JobState") != "RUNNING":
            return  # cancelled, or out of time
        if os.environ.get("SLURM_PROCID", "0") == "0":
            try:
                asked = subprocess.run(
                    ["scontrol", "requeue", job], capture_output=True, timeout=60
                )
            except (OSError, subprocess.SubprocessError):
                return
            if asked.returncode != 0:
                return  # not requeueable: it ends here
    logging.shutdown()  # train.log complete before the process goes
    raise SystemExit(128 + signum)  # past Hydra's and submitit's `except Exception`


def mark_stopped(sweep_dir: Path, signum: int) -> None:
    """Leave the mark that stops the sweep's jobs that have not started."""
    mark = Path(sweep_dir) / layout.SWEEP_STOPPED
    if not mark.exists():
        mark.write_text(signal.Signals(signum).name + "\n")


def stopped_by(sweep_dir: Path) -> signal.Signals | None:
    """The signal that stopped the sweep, if one did."""
    try:
        return signal.Signals[(Path(sweep_dir) / layout.SWEEP_STOPPED).read_text().strip()]
    except (OSError, KeyError):
        return None


@dataclass
class Watch:
    signum: int | None = None


@contextmanager
def signals_stop_the_sweep(sweep_dir: Path, forward_to_workers: bool) -> Iterator[Watch]:
    """Block SIGINT and SIGTERM while the sweep launches its jobs, and watch for them."""
    watch = Watch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    if forward_to_workers:
        # Python 3.11's multiprocessing unblocks both signals when it first starts its resource
        # tracker (SIG_UNBLOCK, not the mask it found), which joblib does as it spawns workers.
        from multiprocessing import resource_tracker

        resource_tracker.ensure_running()
    ignored = {s for s in STOP_SIGNALS if signal.getsignal(s) is signal.SIG_IGN}
    watched = STOP_SIGNALS - ignored  # a signal the shell set to be ignored stays ignored

    def stop(signum: int, frame: object = None) -> None:
        watch.signum = watch.signum or signum
        mark_stopped(sweep_dir, watch.signum)
        if forward_to_workers:
            _terminate_workers()

    # Threads started before this one keep their own masks, and the kernel gives a signal to
    # any thread that does not block it: a Python handler catches it there. When every thread
    # blocks it, the waiting thread takes it.
    previous_handlers = {signum: signal.signal(signum, stop) for signum in watched}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    done = threading.Event()

    def wait_for_signals() -> None:
        while not done.is_set():
            received = signal.sigtimedwait(watched, 0.1)
            if received is not None:
                stop(received.si_signo)

    watcher = threading.Thread(target=wait_for_signals, name="nnlab-sweep-signals", daemon=True)
    watcher.start()
    try:
        yield watch
    finally:
        done.set()
        watcher.join()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
        watch.signum = watch.signum or stopped_by(sweep_dir)


def local_workers(config: Any) -> int:
    """How many jobs the sweep's launcher runs at once in worker processes of this machine:
    joblib's `n_jobs` (-1: one per core, -2: all but one), else 0 (the basic launcher runs jobs
    in the sweep's own process; SLURM elsewhere). The one place that asks which launcher runs
    the jobs. Joblib refuses n_jobs=0 only once the jobs are launched: refused here first."""
    import os

    launcher = config.hydra.launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return 0
    n_jobs = launcher.get("n_jobs")
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        expected = "a number of parallel jobs, or -1 for one per core (-2: all but one)"
        stop(ConfigError("hydra.launcher.n_jobs", n_jobs, f"expected {expected}"))
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def _terminate_workers() -> None:
    """SIGTERM to this process's children: joblib's workers (its resource tracker ignores it)."""
    import psutil

    for child in psutil.Process().children():
        with suppress(psutil.Error):  # it ended meanwhile
            child.send_signal(signal.SIGTERM)


def resume_command(sweep_dir: Path) -> str | None:
    """The command that resumes the whole sweep, to paste as printed: its own overrides, and
    `ckpt_path=` its dir, quoted for Hydra and for the shell. None if its multirun.yaml does
    not read (nnlab-report says so)."""
    import shlex

    saved = layout.read_yaml(Path(sweep_dir) / layout.MULTIRUN_FILE, "hydra", "overrides")
    try:
        overrides = [*saved["hydra"], *saved["task"]]
    except (LookupError, TypeError):
        return None
    resume = shlex.quote(f"ckpt_path='{sweep_dir}'")
    return " ".join(["nnlab-train", "-m", *map(shlex.quote, map(str, overrides)), resume])


def outcome(statuses: Sequence[str]) -> Counter:
    """How many jobs ended which way: completed, interrupted, not run, failed."""
    kinds: Counter = Counter()
    for status in statuses:
        if status.startswith("completed"):
            kinds["completed"] += 1
        elif status == "interrupted":
            kinds["interrupted"] += 1
        elif status.startswith("not run"):
            kinds["not run"] += 1
        else:
            kinds["failed"] += 1
    return kinds


def finish(sweep_dir: Path, statuses: Sequence[str], signum: int | None) -> None:
    """Print how the sweep ended, on one line, and exit as it should: 0 when every job
    completed, 1 when one failed (Hydra's status), 4 when the disk filled up, 128 + the
    signal's number when stopped."""
    counts = outcome(statuses)
    parts = [f"{counts[k]} {k}" for k in ("completed", "interrupted", "failed", "not run")]
    ended = ", ".join(part for part in parts if not part.startswith("0 ")) or "no jobs"
    report = f"nnlab-report {sweep_dir}"
    if signum is not None:
        name = signal.Signals(signum).name
        resume = resume_command(sweep_dir)
        advice = "; resume the sweep with the command below" if resume else ""
        print(
            f"nnlab: sweep stopped by {name}: {ended}. {report} lists them{advice}", file=sys.stderr
        )
        if resume:
            print(f"  {resume}", file=sys.stderr)
        raise SystemExit(128 + signum)
    if counts["failed"] or counts["interrupted"] or counts["not run"]:
        full = [s for s in statuses if s.startswith("failed: disk full")] or [
            s
            for s in statuses
            if "the disk filled up" in s  # nnlab.sweep.grid.NOT_STARTED
        ]
        first = (full or [s for s in statuses if not s.startswith("completed")])[0]
        free = "Free some space, then run the failed jobs again. " if full else ""
        print(
            f"nnlab: sweep {sweep_dir}: {ended} (first: {first}). {free}{report} lists every job",
            file=sys.stderr,
        )
        raise SystemExit(4 if full else 1)  # 4: a full disk, as a single run exits
    print(f"Sweep {sweep_dir}: {ended}. {report} tabulates it")
