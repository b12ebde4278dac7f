"""Where a run's files are: the one home of every path nnlab writes or reads back.

    <paths.log_dir>/<task_name>/runs/<stamp>/    a run; a sweep's job: multiruns/<stamp>/<job>/
      .hydra/config.yaml, overrides.yaml       the composed config, the command's overrides
      .hydra/resumed/<stamp>/                  the same, for each resume of the run
      checkpoints/last.ckpt, best.ckpt         where training stopped; the best validation
      metrics.json, train.log, figures/, evals/  results, log, figures, nnlab-eval's results
      run.lock                                 while a process trains or evaluates the run
    <sweep dir>/sweep_stopped                  a signal stopped the sweep: no job starts after

Hydra places each run through the resolvers registered here (conf/hydra/default.yaml): a new
run gets a new stamped dir, and `ckpt_path=` names the run it resumes, so that Hydra's one
compose already runs in that run's dir. Every name is checked after interpolation: a run dir
is never made outside `paths.log_dir`.
"""

from __future__ import annotations

import errno
import json
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from nnlab.checks import NO_VALUE
from nnlab.errors import ConfigError

HYDRA_DIR, CHECKPOINTS, METRICS, SWEEP_STOPPED, LOCK, MULTIRUN_FILE = (
    ".hydra",
    "checkpoints",
    "metrics.json",
    "sweep_stopped",
    "run.lock",
    "multirun.yaml",  # a sweep dir's config, with the sweep's overrides
)


LAST_CHECKPOINT = "last.ckpt"  # where training stopped (nnlab.run.callbacks.LastCheckpoint)


def checkpoint(run_dir: Path | str, which: str = "last") -> Path:
    """`<run dir>/checkpoints/<which>.ckpt` (conf/callbacks/default.yaml writes them there)."""
    return Path(run_dir) / CHECKPOINTS / f"{which}.ckpt"


def is_run_dir(path: Path | str) -> bool:
    return (Path(path) / HYDRA_DIR).is_dir()


SMALL_FILE = 16 * 2**20  # a run's config, overrides or metrics.json: kilobytes, not this


def read_small(path: Path) -> str:
    """A small file of a run dir, read as untrusted data: a regular file (a FIFO would block
    the reader forever, /dev/zero never end) of at most SMALL_FILE bytes, in UTF-8. OSError
    or ValueError otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not a regular file")
    if path.stat().st_size > SMALL_FILE:
        raise ValueError(f"{path} is over {SMALL_FILE // 2**20} MB")
    return path.read_text(encoding="utf-8")


def read_metrics(run_dir: Path | str) -> dict:
    """metrics.json as a dict; {} when there is none or it cannot be read."""
    try:
        metrics = json.loads(read_small(Path(run_dir) / METRICS))
    except (OSError, ValueError, RecursionError):  # RecursionError: [[[[... nested deep
        return {}
    return metrics if isinstance(metrics, dict) else {}


def read_yaml(path: Path, *keys: str | int) -> Any:
    """A small YAML file read as data, and the value at `keys` inside it (`"hydra",
    "overrides"`); None when the file does not read or holds no such value."""
    try:
        value = yaml.safe_load(read_small(path))
        for key in keys:
            value = value[key]
    except (OSError, ValueError, RecursionError, yaml.YAMLError, LookupError, TypeError):
        return None
    return value


def saved_file(run_dir: Path | str, name: str, key: str) -> Any:
    """A YAML file of the run's .hydra/, read as data (safe_load builds no object a tag names);
    one that does not read is refused under `key`, naming the file."""
    path = Path(run_dir) / HYDRA_DIR / name
    try:
        return yaml.safe_load(read_small(path))
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as error:
        reason = f"its {HYDRA_DIR}/{name} does not read ({type(error).__name__})"
        raise ConfigError(key, str(run_dir), reason) from None


def saved_overrides(run_dir: Path | str, key: str) -> list[str]:
    """The overrides of the command that started the run (.hydra/overrides.yaml)."""
    saved = saved_file(run_dir, "overrides.yaml", key)
    if saved is None:
        return []
    if not isinstance(saved, list) or not all(isinstance(o, str) for o in saved):
        reason = f"its {HYDRA_DIR}/overrides.yaml is not a list of overrides"
        raise ConfigError(key, str(run_dir), reason)
    return saved


@contextmanager
def locked(run_dir: Path | str, key: str) -> Iterator[None]:
    """One process at a time in a run dir: `run.lock` holds the holder's process id and host
    (and SLURM job), taken atomically and removed at the end. A second comer is refused
    (ConfigError under `key`), naming the holder; a lock whose holder on this host is dead (a
    kill -9), or was this SLURM job before SLURM requeued it, is taken over. The other
    processes of a DDP or SLURM job (rank > 0) share their rank 0's lock."""
    if is_other_rank():
        yield
        return
    job = slurm_job()
    lock, me = Path(run_dir) / LOCK, f"{os.getpid()} {socket.gethostname()} {job or ''}".strip()
    for _ in range(2):
        try:
            with open(lock, "x") as file:  # fails if it exists: one process wins
                file.write(me + "\n")
            break
        except FileExistsError:
            pid, host, holder_job = [*lock.read_text(errors="replace").split(), "", "", ""][:3]
            # a requeued SLURM job, on any node, after SLURM ended its earlier run
            requeued = bool(job) and holder_job == job and os.environ.get("SLURM_RESTART_COUNT")
            if lock_holder(run_dir) is None or requeued:
                lock.unlink(missing_ok=True)  # its holder died: take it over
                continue
            reason = (
                f"in use by process {pid} on {host}: wait for it to end (or, if it is gone, "
                f"remove {lock})"
            )
            raise ConfigError(key, str(run_dir), reason) from None
    try:
        yield
    finally:
        if lock.is_file() and lock.read_text().strip() == me:
            lock.unlink()


def slurm_job() -> str | None:
    """This process's SLURM job as SLURM's commands name it, `<array>_<task>` in an array (the
    array's own id, which its first task also has, names the whole array); None outside."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{task}" if array and task else os.environ.get("SLURM_JOB_ID")


RANKS = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # set in a job's other processes


def is_other_rank() -> bool:
    """Whether this process is one of a DDP or SLURM job's others (rank > 0), which Lightning
    starts by running the command again, placed in rank 0's run dir."""
    return any(int(os.environ.get(name, "0") or 0) > 0 for name in RANKS)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def run_stamp() -> str:
    """`2026-11-29_14-03-07.042_a3f9c2`: a timestamp to the millisecond, so that runs list in
    the order they started, and a random suffix, so that two runs never share a dir."""
    now = datetime.now()
    return f"{now:%Y-%m-%d_%H-%M-%S}.{now.microsecond // 1000:03d}_{secrets.token_hex(3)}"


def path_safe(text: str, max_length: int = 120) -> str:
    """`text` as one path component: no '/', and short enough for any file system."""
    text = str(text).replace("/", "|")
    return text if len(text) <= max_length else text[: max_length - 3] + "..."


def lock_holder(run_dir: Path | str) -> str | None:
    """Who holds the run dir's `run.lock` ("<pid> <host>"), or None: no lock, or one whose
    holder on this host has died."""
    try:
        pid, host = [*(Path(run_dir) / LOCK).read_text(errors="replace").split(), "", ""][:2]
    except OSError:
        return None
    dead = host == socket.gethostname() and pid.isdigit() and not process_alive(int(pid))
    return None if dead else f"{pid} {host}"


def task_dir(log_dir: str, task_name: str | None) -> Path:
    """`<log_dir>/<task_name>`, refused unless it lies inside a log dir nnlab can write; asked
    before Hydra makes any dir, so the options composed are checked here first."""
    from nnlab.run.config import check_choices

    check_choices()
    if task_name is None:
        raise ConfigError(
            "task_name", NO_VALUE, "no value: the experiment= sets it, or set it yourself"
        )
    name = str(task_name)
    if not name or "/" in name or name in (".", "..") or name != name.strip():
        raise ConfigError("task_name", name, "expected a plain folder name, inside paths.log_dir")
    if not str(log_dir).strip() or Path(str(log_dir)).resolve() == Path("/"):
        raise ConfigError("paths.log_dir", log_dir, "expected a folder for the runs, not the root")
    folder = Path(str(log_dir)).expanduser() / name
    reason = unwritable(folder)
    if reason:
        raise ConfigError("paths.log_dir", log_dir, f"cannot write there ({reason})")
    return folder


def unwritable(folder: Path) -> str | None:
    """Why files cannot be made in `folder` (or in the folders it would be made in), or None.
    Asks the file system, and makes nothing."""
    existing = next(p for p in (folder, *folder.absolute().parents) if p.exists())
    if not existing.is_dir():
        return f"{os.strerror(errno.ENOTDIR)}: {existing}"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{os.strerror(errno.EACCES)}: {existing}"
    return None


def run_dir(
    log_dir: str, task_name: str, ckpt_path: str | None, run_name: str | None = None
) -> str:
    """A new run's dir, or the dir of the run `ckpt_path` resumes (resolver: hydra.run.dir).
    A new run's is named `run_name` when one is given, which makes it the same on each node
    of a run over several (trainer.num_nodes), else a new stamp."""
    _PLACING.clear()
    runs = task_dir(log_dir, task_name) / "runs"
    if ckpt_path is not None:
        return str(resumed_run(str(ckpt_path), runs))
    if run_name is None:
        return _placing(log_dir, runs / run_stamp())
    name = str(run_name)
    if name in ("", ".", "..") or path_safe(name) != name:
        expected = "a name for the run's dir: no '/', at most 120 characters"
        raise ConfigError("paths.run_name", run_name, expected)
    named = runs / name
    # a run's (its .hydra/); the other nodes join node 0's, whose dir they may make first
    if is_run_dir(named) and not is_other_rank():
        reason = f"{named} exists: resume it with ckpt_path={named}, or name a new run"
        raise ConfigError("paths.run_name", run_name, reason)
    return _placing(log_dir, named)


# The new run dir Hydra is about to make, and its log dir, from this resolver until the run's
# code has the dir (placed): a refusal to make it is then told apart by its path.
_PLACING: list[tuple[str, Path]] = []


def _placing(log_dir: str, run: Path) -> str:
    _PLACING[:] = [(log_dir, run)]
    return str(run)


def placed() -> None:
    """The run's dir is made: an error on its path from now on is not the log dir's refusal."""
    _PLACING.clear()


def refused_run_dir(error: OSError) -> ConfigError | None:
    """`error` as paths.log_dir's refusal if, while the new run's dir was being made, the file
    system refused it or a folder above it, though task_dir's check found the log dir
    writable: access() allows what mkdir refuses in /proc as root, or on NFS with root_squash."""
    if not _PLACING or not isinstance(error.filename, str | bytes | os.PathLike):
        return None
    log_dir, run = _PLACING[0]
    refused = Path(os.fsdecode(error.filename))
    if refused not in (run, *run.parents):
        return None
    reason = f"cannot make the run's dir there ({error.strerror}: {refused})"
    return ConfigError("paths.log_dir", log_dir, reason)


def sweep_dir(log_dir: str, task_name: str) -> str:
    return str(task_dir(log_dir, task_name) / "multiruns" / run_stamp())


def hydra_subdir(ckpt_path: str | None) -> str | None:
    """Where Hydra saves the command's config: .hydra, or for a resume .hydra/resumed/<stamp>;
    nowhere in the other nodes of a run over several, which share node 0's dir."""
    if is_other_rank():
        return None
    return HYDRA_DIR if ckpt_path is None else f"{HYDRA_DIR}/resumed/{run_stamp()}"


def resumed_run(value: str, runs: Path) -> Path:
    """The run dir `ckpt_path=value` names, checked before anything is written: `last` (the
    newest of `runs` that saved a checkpoint), a run dir, or a checkpoint file in one. A
    completed run is refused: nothing a finished run wrote is overwritten."""
    if value == "last":
        # the newest by its checkpoint's time: a run named by paths.run_name sorts anywhere
        last_checkpoints = sorted(runs.glob(f"*/{CHECKPOINTS}/{LAST_CHECKPOINT}"), key=modified)
        saved = [path.parent.parent for path in last_checkpoints]
        if not saved:
            raise ConfigError("ckpt_path", value, f"no run with a last.ckpt to resume under {runs}")
        found = saved[-1]
    else:
        path = Path(value).expanduser().absolute()
        found = path if path.is_dir() else path.parent.parent
    if not is_run_dir(found):
        raise ConfigError("ckpt_path", value, f"{found} is not an nnlab run dir (no .hydra/)")
    check_no_links(found, "ckpt_path", value)
    if str(read_metrics(found).get("status", "")).startswith("completed"):  # early stops too
        raise ConfigError(
            "ckpt_path", value, f"{found} completed; a finished run is never overwritten"
        )
    return found


def modified(path: Path) -> float:
    """A file's modification time; 0 for one removed meanwhile or a broken link."""
    try:
        return path.stat().st_mtime
    except OSError:  # removed meanwhile
        return 0.0


WRITTEN_INTO = {HYDRA_DIR: "dir", CHECKPOINTS: "dir", "figures": "dir", "evals": "dir"}
WRITTEN_INTO |= {"train.log": "file", METRICS: "file"}  # what a resume or an eval writes again


def check_no_links(run_dir: Path, key: str, value: str) -> None:
    """A run dir nnlab writes into again (a resume, nnlab-eval) holds no symbolic link where it
    writes: a linked train.log, figures/ or evals/ would send the writes wherever it points.
    (Files written whole are renamed over a link, never through it.) Nor a folder where a
    file goes, or a file where a folder goes: the run would fail when it writes them."""
    for path in (Path(run_dir), *(Path(run_dir) / name for name in WRITTEN_INTO)):
        if path.is_symlink():
            reason = f"{path} is a symbolic link: nnlab writes nothing outside the run dir"
            raise ConfigError(key, value, reason)
        kind = WRITTEN_INTO.get(path.name)
        if (kind == "file" and path.is_dir()) or (kind == "dir" and path.is_file()):
            raise ConfigError(key, value, f"{path} is not a {kind}: a run dir's is")


def resumed_checkpoint(ckpt_path: str, run: Path) -> Path:
    """The checkpoint file `ckpt_path` names in the run dir `run`."""
    path = Path(ckpt_path).expanduser()
    return path if ckpt_path != "last" and path.suffix == ".ckpt" else checkpoint(run, "last")


def task_option() -> str | None:
    """The task group's option Hydra composed (`task=lit_moons`: lit_moons), which names a run
    that no experiment names; None outside a Hydra job."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.choices.get("task") if HydraConfig.initialized() else None


def task_name_of(run_dir: Path | str) -> str:
    """The <task_name> folder a run dir lies in (runs/<stamp>, or multiruns/<stamp>/<job>)."""
    path = Path(run_dir).absolute()
    return next((p.parent.name for p in path.parents if p.name in ("runs", "multiruns")), path.name)


def register_resolvers() -> None:
    """The resolvers nnlab's configs use (conf/hydra/default.yaml, conf/logger/*.yaml)."""
    from nnlab.run.trackers import mlflow_store, wandb_offline

    # use_cache: a sweep's jobs copy the sweep's resolved values (Hydra does, for `now` too),
    # so all of them agree on the sweep's dir, even in other processes.
    cached = {"run_dir": run_dir, "sweep_dir": sweep_dir, "hydra_subdir": hydra_subdir}
    for name, function in cached.items():
        OmegaConf.register_new_resolver(name, function, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)
    OmegaConf.register_new_resolver("task_option", task_option, replace=True)
    from nnlab.run.config import searchpath_groups  # for --help (conf/hydra/default.yaml)

    OmegaConf.register_new_resolver("searchpath_groups", searchpath_groups, replace=True)
    # The loggers' configs: a run's name (its dir's), tags as text, an absolute path, and
    # whether W&B runs offline.
    OmegaConf.register_new_resolver("path_name", lambda path: Path(str(path)).name, replace=True)
    OmegaConf.register_new_resolver("join", lambda items: ",".join(map(str, items)), replace=True)
    OmegaConf.register_new_resolver("abspath", lambda p: str(Path(str(p)).resolve()), replace=True)
    OmegaConf.register_new_resolver("wandb_offline", wandb_offline, replace=True)
    OmegaConf.register_new_resolver("mlflow_store", mlflow_store, replace=True)
