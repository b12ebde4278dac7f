"""`make bench`: how fast nnlab's command line answers, as a process timing.

Each command runs as a new process, as a user types it; the figure is the median of several
runs. Target: under 2 s for `--help`, `--cfg job` and a bad config value that the config alone
can judge (an unknown key or option, a trainer count, the seed). A value that only a class's
constructor can judge (a model's width) answers once torch and Lightning are imported: shown
for comparison, with no target.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

NNLAB_TRAIN = str(Path(sys.executable).parent / "nnlab-train")
TARGET_S = 2.0
COMMANDS = {  # name: (arguments, expected exit status, held to the target)
    "--help": (["--help"], 0, True),
    "--cfg job": (["--cfg", "job", "experiment=rings"], 0, True),
    "unknown option": (["experiment=ringz"], 2, True),
    "bad trainer count": (["experiment=rings", "trainer.max_steps=-5"], 2, True),
    "bad seed": (["experiment=rings", "seed=-1"], 2, True),
    "bad model width": (["experiment=rings", "model.hidden_nodes=0"], 2, False),
}


def seconds(arguments: list[str], status: int, log_dir: str) -> float:
    started = time.perf_counter()
    result = subprocess.run(
        [NNLAB_TRAIN, *arguments, f"paths.log_dir={log_dir}"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if result.returncode != status:
        sys.exit(f"{arguments}: exit {result.returncode}, expected {status}\n{result.stderr}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as log_dir:
        for _ in range(args.repeats):  # interleaved: a busy moment slows every command alike
            for name, (arguments, status, _) in COMMANDS.items():
                times[name].append(seconds(arguments, status, log_dir))
    print(f"Command line, median of {args.repeats} processes each (target < {TARGET_S:.0f} s):")
    missed = []
    for name, (_, _, held) in COMMANDS.items():
        median = statistics.median(times[name])
        verdict = ("ok" if median < TARGET_S else "MISSED") if held else "no target"
        print(f"  {name:<18} {median:5.2f} s  {verdict}")
        if held and median >= TARGET_S:
            missed.append(name)
    if missed:
        sys.exit(f"over {TARGET_S:.0f} s: {', '.join(missed)}")


if __name__ == "__main__":
    main()
