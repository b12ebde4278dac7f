"""What pruning saves (issue 20, point 3): `hparams_search=fashion_mlp_optuna`, 20 trials of up
to 20 epochs each, without a pruner and with `hydra.sweeper.pruner=median`, for each of
several sampler seeds (Fashion-MNIST from Debian's dataset-fashion-mnist; nothing downloads).

For each search: the epochs its trials trained (each run's last.ckpt says how many) and its
best val/acc. Targets: the pruned searches train at most 60% of the unpruned searches' epochs,
and their best value, averaged over the seeds, is within the spread of the unpruned searches'
best values over the seeds (from the lowest to the highest). Every value is printed. About
30 minutes on 2 cores: `python benchmarks/pruning.py`, not part of `make bench`.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import torch

NNLAB_TRAIN = str(Path(sys.executable).parent / "nnlab-train")
EPOCHS_SHARE = 0.6


def search(log_dir: Path, seed: int, pruner: str | None) -> tuple[int, float]:
    """One search of 20 trials: the epochs its trials trained, and its best val/acc."""
    command = [NNLAB_TRAIN, "-m", "hparams_search=fashion_mlp_optuna", f"paths.log_dir={log_dir}"]
    command += [f"hydra.sweeper.seed={seed}", f"hydra.sweeper.pruner={pruner or 'null'}"]
    subprocess.run(command, check=True, capture_output=True)
    storage = f"sqlite:///{log_dir}/fashion_mlp/searches/fashion_mlp_optuna.db"
    study = optuna.load_study(study_name="fashion_mlp_optuna", storage=storage)
    epochs = 0
    for checkpoint in log_dir.glob("fashion_mlp/multiruns/*/*/checkpoints/last.ckpt"):
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        epochs += saved["epoch"] + 1  # the epoch it was in when saved, counted from 0
    return epochs, study.best_value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pruner", default="median")
    args = parser.parse_args()
    found: dict[str | None, list[tuple[int, float]]] = {None: [], args.pruner: []}
    for seed in range(args.seeds):
        for pruner in found:
            with tempfile.TemporaryDirectory() as log_dir:
                epochs, best = search(Path(log_dir), seed, pruner)
            found[pruner].append((epochs, best))
            print(f"  seed {seed} pruner {pruner}: {epochs} epochs, best val/acc {best:.4f}")
    unpruned, pruned = found[None], found[args.pruner]
    share = sum(e for e, _ in pruned) / sum(e for e, _ in unpruned)
    lowest, highest = min(b for _, b in unpruned), max(b for _, b in unpruned)
    print(f"Pruning ({args.pruner}), 20 trials of fashion_mlp_optuna, {args.seeds} seeds:")
    print(f"  epochs trained: {share:.0%} of the unpruned searches' (target <= 60%)")
    bests = ", ".join(f"{b:.4f}" for _, b in pruned)
    print(f"  best val/acc: pruned {bests}; unpruned {lowest:.4f} .. {highest:.4f}")
    mean = sum(b for _, b in pruned) / len(pruned)
    print(f"  pruned searches' mean best {mean:.4f} (target: within the unpruned spread)")
    if share > EPOCHS_SHARE or not lowest <= mean <= highest:
        sys.exit(1)


if __name__ == "__main__":
    main()
