"""`make bench`: a module of your own, run by nnlab, against the same module in a plain
Lightning script, as whole processes (imports included).

    nnlab-train 'hydra.searchpath=[file://examples/moons/conf]' experiment=moons_lightning
    python benchmarks/plain_lightning.py LOG_DIR 20

Both train the moons example's LitMoons for 20 epochs with TensorBoard and a best checkpoint,
then test it, on one torch thread. Runs are interleaved and each side keeps its fastest.
Target: <= 1.15x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
TARGET = 1.15


def seconds(command: list[str]) -> float:
    environment = os.environ | {"PYTHONPATH": str(ROOT / "examples" / "moons")}
    environment |= {"OMP_NUM_THREADS": "1", "NNLAB_THREADS": "1"}
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=environment)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per side (the fastest counts)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as log_dir:
        plain_command = [sys.executable, str(ROOT / "benchmarks" / "plain_lightning.py")]
        plain_command += [str(Path(log_dir) / "plain"), "20"]
        ours_command = [
            str(BIN / "nnlab-train"),
            f"hydra.searchpath=[file://{ROOT}/examples/moons/conf]",
        ]
        ours_command += ["experiment=moons_lightning", f"paths.log_dir={log_dir}"]
        plain, ours = [], []
        for repeat in range(args.repeats):
            plain.append(seconds(plain_command))
            ours.append(seconds(ours_command))
            print(
                f"  run {repeat + 1}: plain {plain[-1]:.2f} s, nnlab {ours[-1]:.2f} s", flush=True
            )
    ratio = min(ours) / min(plain)
    print(
        f"\n{'your module, whole process':<28} plain {min(plain):6.2f} s   nnlab {min(ours):6.2f} s"
        f"   ratio {ratio:.2f}x (target <= {TARGET}x)"
    )


if __name__ == "__main__":
    main()
