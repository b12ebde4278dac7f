"""Kill campaign: SIGKILL rings runs at random moments, then measure what they left on disk and
whether `ckpt_path=last` takes them up again.

Why: Ctrl-C and SIGTERM are handled (GracefulStop saves last.ckpt before stopping), but kill -9,
the OOM killer or a lost node give no warning. What survives is whatever the writes in flight
left: last.ckpt (rewritten at every validation, through Lightning's transaction), metrics.json
and figures (nnlab's write_atomically, through a `.partial` file) and TensorBoard's event files
(appended to, flushed at each log). This script measures that instead of assuming it:

- each run is killed at a time drawn uniformly over an uninterrupted run's duration (measured
  first, unless --duration is given), so kills land in startup, training and the end;
- every checkpoint is loaded weights-only, metrics.json parsed, `.partial` files looked for, and
  every event file read with TensorBoard's EventFileLoader. The loader stops silently at a bad
  record, so the bytes it read are compared with the file's size: an incomplete last record is a
  "truncated tail" (what a kill mid-append leaves), anything else it could not read "unreadable";
- a run with a loadable last.ckpt is resumed (exit 0, status completed, last.ckpt at max_steps
  expected); one without must be refused with exit 2;
- a run killed after its metrics.json said "completed" is finished: its resume must be refused;
- steps lost, for runs to resume: the highest step in the killed run's event files minus
  last.ckpt's global_step. The rings task logs every 100 steps, so this is a lower bound, to the
  nearest 100, of the steps trained that the checkpoint does not hold.

    .venv/bin/python scripts/kill_campaign.py --runs 20 --seed 0 [--out summary.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from tensorboard.backend.event_processing.event_file_loader import (
    EventFileLoader,
    RawEventFileLoader,
)
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

TRAIN = str(Path(sys.executable).with_name("nnlab-train"))


def train_command(log_dir: Path, steps: int, *extra: str) -> list[str]:
    return [
        TRAIN,
        "experiment=rings",
        f"trainer.max_steps={steps}",
        "model.hidden_nodes=4",
        "logger=tensorboard",
        "threads=1",
        f"paths.log_dir={log_dir}",
        *extra,
    ]


def start(command: list[str], logs: Path) -> subprocess.Popen[bytes]:
    with open(f"{logs}.out", "wb") as out, open(f"{logs}.err", "wb") as err:
        return subprocess.Popen(command, stdout=out, stderr=err, stdin=subprocess.DEVNULL)


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else ""


def checkpoint_step(path: Path) -> int | str:
    """global_step of a checkpoint read weights-only, or why it cannot be read."""
    try:
        return int(torch.load(path, weights_only=True, map_location="cpu")["global_step"])
    except Exception as error:
        return f"fails to load: {type(error).__name__}: {error}"


def read_events(path: Path) -> tuple[str, int | None]:
    """('complete' | 'truncated tail' | 'unreadable: why', the highest step with a summary)."""
    try:
        steps = [e.step for e in EventFileLoader(str(path)).Load() if e.summary.value]
        read = sum(16 + len(record) for record in RawEventFileLoader(str(path)).Load())
    except Exception as error:
        return f"unreadable: {type(error).__name__}: {error}", None
    top = max(steps, default=None)
    rest = path.read_bytes()[read:]  # a record: length (8), its crc (4), data, data's crc (4)
    if not rest:
        return "complete", top
    if len(rest) < 12 or (
        masked_crc32c(rest[:8]) == struct.unpack("<I", rest[8:12])[0]
        and len(rest) < 16 + struct.unpack("<Q", rest[:8])[0]
    ):
        return "truncated tail", top
    return f"unreadable: {len(rest)} bytes left after {read} bytes of records", top


def scan(log_dir: Path) -> dict[str, Any]:
    """What a run left under `log_dir`: its run dir, checkpoints, metrics.json, event files."""
    runs = sorted((log_dir / "rings" / "runs").glob("*"))
    partials = [str(p.relative_to(log_dir)) for p in log_dir.rglob("*.partial")]
    found: dict[str, Any] = {"run_dir": bool(runs), "partials": partials}
    if not runs:
        return found
    run_dir = runs[-1]
    found["files"] = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    found["checkpoints"] = {
        p.name: checkpoint_step(p) for p in sorted((run_dir / "checkpoints").glob("*"))
    }
    metrics = run_dir / "metrics.json"
    try:
        found["metrics"] = json.loads(metrics.read_text()).get("status", "no status")
    except FileNotFoundError:
        found["metrics"] = None
    except ValueError as error:
        found["metrics"] = f"invalid JSON: {error}"
    events = {p.name: read_events(p) for p in sorted(run_dir.glob("events.out.tfevents.*"))}
    found["events"] = {name: state for name, (state, _) in events.items()}
    found["event_step"] = max((s for _, s in events.values() if s is not None), default=None)
    return found


def kill_one(log_dir: Path, logs: Path, steps: int, kill_at: float, timeout: float) -> dict:
    """Start a run, SIGKILL it `kill_at` s later, record what it left, then try to resume it."""
    record: dict[str, Any] = {"kill_at_s": round(kill_at, 2)}
    began = time.monotonic()
    process = start(train_command(log_dir, steps), logs / "kill")
    try:
        process.wait(timeout=kill_at)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
    record["kill_rc"] = process.wait()
    record["killed_after_s"] = round(time.monotonic() - began, 2)
    record["after_kill"] = killed = scan(log_dir)
    if record["kill_rc"] != -signal.SIGKILL:
        record["outcome"] = "ended before the kill"
        return record
    step = killed.get("checkpoints", {}).get("last.ckpt")
    record["ckpt_step"] = step if isinstance(step, int) else None
    # A run killed after it wrote metrics.json "completed" is finished: resuming must refuse it.
    done = killed.get("metrics") == "completed"
    expected = "resume" if record["ckpt_step"] is not None and not done else "refuse"
    if expected == "resume" and killed["event_step"] is not None:
        record["steps_lost"] = killed["event_step"] - step
    process = start(train_command(log_dir, steps, "ckpt_path=last"), logs / "resume")
    try:
        record["resume_rc"] = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        record["resume_rc"] = f"timed out after {timeout:.0f} s: {process.wait()}"
    record["resume_stderr"] = last_line(logs / "resume.err")
    record["after_resume"] = resumed = scan(log_dir)
    final = resumed.get("checkpoints", {}).get("last.ckpt")
    if expected == "refuse" and record["resume_rc"] == 2:
        record["outcome"] = f"{'completed before the kill; ' * done}resume refused (exit 2)"
    elif expected == "resume" and (record["resume_rc"], resumed["metrics"], final) == (
        0,
        "completed",
        steps,
    ):
        record["outcome"] = "resumed OK"
    else:
        record["outcome"] = f"other (expected: {expected})"
    return record


def summarise(records: list[dict], steps: int, duration: float) -> dict[str, Any]:
    killed = [r for r in records if r["kill_rc"] == -signal.SIGKILL]
    lost = [r["steps_lost"] for r in records if "steps_lost" in r]
    scans = [s for r in records for s in (r["after_kill"], r.get("after_resume")) if s]
    after_kill = [v for r in records for v in r["after_kill"].get("events", {}).values()]

    def count(outcome: str) -> int:
        return sum(r["outcome"] == outcome for r in records)

    def events(state: str) -> int:
        return sum(v.startswith(state) for s in scans for v in s.get("events", {}).values())

    return {
        "runs": len(records),
        "max_steps": steps,
        "expected duration (s)": round(duration, 2),
        "killed by SIGKILL": len(killed),
        "ended before the kill": count("ended before the kill"),
        "killed before a run dir": sum(not r["after_kill"]["run_dir"] for r in killed),
        "killed with a run dir, no loadable last.ckpt": sum(
            r["after_kill"]["run_dir"] and r["ckpt_step"] is None for r in killed
        ),
        "resumed OK (exit 0, completed, step == max_steps)": count("resumed OK"),
        "resume refused cleanly (exit 2), no last.ckpt": count("resume refused (exit 2)"),
        "killed after metrics.json said completed; resume refused (exit 2)": count(
            "completed before the kill; resume refused (exit 2)"
        ),
        "other outcomes": [
            {k: r.get(k) for k in ("run", "outcome", "resume_rc", "resume_stderr")}
            | {"status": r.get("after_resume", {}).get("metrics")}
            for r in records
            if r["outcome"].startswith("other")
        ],
        "steps lost beyond last.ckpt, runs to resume (events' top step - ckpt's)": {
            "runs measured": len(lost),
            "min": min(lost, default=None),
            "median": statistics.median(lost) if lost else None,
            "max": max(lost, default=None),
        },
        "corrupted files (after kills and after resumes)": {
            "checkpoints failing to load": sum(
                str(v).startswith("fails") for s in scans for v in s.get("checkpoints", {}).values()
            ),
            "metrics.json invalid": sum(str(s.get("metrics")).startswith("invalid") for s in scans),
            ".partial leftovers": sum(len(s["partials"]) for s in scans),
            "unreadable event files": events("unreadable"),
        },
        "truncated event tails (after kills)": after_kill.count("truncated tail"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=4000, help="trainer.max_steps")
    parser.add_argument("--duration", type=float, help="a run's seconds (default: time one)")
    parser.add_argument("--out", type=Path, help="also write the summary and runs as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir, for a look")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    root = Path(tempfile.mkdtemp(prefix="kill_campaign_"))
    try:
        duration = args.duration
        if duration is None:
            began = time.monotonic()
            rc = subprocess.run(
                train_command(root / "calibration", args.steps), capture_output=True
            ).returncode
            duration = time.monotonic() - began
            print(f"uninterrupted run: exit {rc}, {duration:.1f} s", file=sys.stderr)
            if rc != 0:
                raise SystemExit("the uninterrupted run failed: nothing to measure against")
        records = []
        for i in range(args.runs):
            logs = root / "logs" / str(i)
            logs.mkdir(parents=True)
            kill_at = rng.uniform(0, duration)
            record = {"run": i} | kill_one(root / str(i), logs, args.steps, kill_at, 20 * duration)
            records.append(record)
            print(
                f"run {i}: stopped at {record['killed_after_s']} s, rc {record['kill_rc']}, "
                f"checkpoints {record['after_kill'].get('checkpoints')}, events to step "
                f"{record['after_kill'].get('event_step')} "
                f"{sorted(record['after_kill'].get('events', {}).values())}"
                f" -> resume rc {record.get('resume_rc')}: {record['outcome']}",
                file=sys.stderr,
            )
        summary = summarise(records, args.steps, duration)
        width = max(map(len, summary))
        for key, value in summary.items():
            print(f"{key:<{width}}  {json.dumps(value)}")
        if args.out:
            args.out.write_text(json.dumps({"summary": summary, "runs": records}, indent=1))
    finally:
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
