"""`make bench`: nnlab's speed on the rings task, as ratios to a plain PyTorch loop.

1. Training loop, in this process: `trainer.fit` of `experiment=rings` as configured by default
   (3 sigmoid nodes, 10,000 full-batch steps; TensorBoard logging, validation every 500 steps,
   checkpoints and the progress bar on) against the notebook's plain loop on the same data and
   initial network. Target: <= 1.3x.
2. Whole process, imports included: `nnlab-train experiment=rings trainer.max_steps=20000`
   against `python benchmarks/plain_rings.py 20000`. Target: <= 1.6x.

Runs are interleaved and each side keeps its fastest of several repeats, so a noisy neighbour
slows both sides' worst runs rather than one side's ratio.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from nnlab.train import CONFIG_DIR, build_run

sys.path.insert(0, str(Path(__file__).parent))
from plain_rings import train_plain

BIN = Path(sys.executable).parent


def nnlab_fit(steps: int, log_dir: str) -> tuple[float, object, torch.Tensor, torch.Tensor]:
    """Time nnlab's trainer.fit; return the seconds, and the data and initial network it used."""
    run_dir = tempfile.mkdtemp(dir=log_dir)
    overrides = [f"trainer.max_steps={steps}", f"paths.output_dir={run_dir}"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run = build_run(cfg)
    initial_network = copy.deepcopy(run.task.network)
    run.datamodule.setup("fit")
    features, targets = run.datamodule.splits["train"]
    started = time.perf_counter()
    run.trainer.fit(run.task, datamodule=run.datamodule)
    return time.perf_counter() - started, initial_network, features, targets


def whole_process(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def report(label: str, plain: list[float], ours: list[float], target: float) -> str:
    ratio = min(ours) / min(plain)
    return (
        f"{label:<28} plain {min(plain):6.2f} s   nnlab {min(ours):6.2f} s   "
        f"ratio {ratio:.2f}x (target <= {target}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per side (the fastest counts)")
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--process-steps", type=int, default=20_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as log_dir:
        plain, ours = [], []
        for repeat in range(args.repeats):
            seconds, network, features, targets = nnlab_fit(args.steps, log_dir)
            ours.append(seconds)
            plain.append(train_plain(features, targets, network, args.steps))
            print(
                f"  loop {repeat + 1}: plain {plain[-1]:.2f} s, nnlab {ours[-1]:.2f} s", flush=True
            )

        steps = str(args.process_steps)
        plain_command = [sys.executable, str(Path(__file__).parent / "plain_rings.py"), steps]
        ours_command = [str(BIN / "nnlab-train"), "experiment=rings", f"trainer.max_steps={steps}"]
        ours_command.append(f"paths.log_dir={log_dir}")
        plain_process, ours_process = [], []
        for repeat in range(args.process_repeats):
            plain_process.append(whole_process(plain_command))
            ours_process.append(whole_process(ours_command))
            print(
                f"  process {repeat + 1}: plain {plain_process[-1]:.2f} s, "
                f"nnlab {ours_process[-1]:.2f} s",
                flush=True,
            )

    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads; fastest run of each side"
    )
    print(report(f"training loop, {args.steps} steps", plain, ours, 1.3))
    print(report(f"whole process, {steps} steps", plain_process, ours_process, 1.6))


if __name__ == "__main__":
    main()
