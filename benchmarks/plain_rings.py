"""The notebook's plain PyTorch loop on the rings: the baseline `make bench` compares nnlab with.

Run alone (`python benchmarks/plain_rings.py 20000`) it is the whole-process baseline: a script
that generates the rings and trains a 3-node sigmoid MLP with full-batch Adam, nothing else.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import nn


def rings(points_per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The notebook's generate_binary_data, vectorised."""
    rng = np.random.default_rng(seed)
    radius = np.column_stack(
        [rng.uniform(0, 1, points_per_class), rng.uniform(3, 4, points_per_class)]
    )
    angle = rng.uniform(0, 2 * np.pi, (points_per_class, 2))
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=-1).reshape(-1, 2)
    labels = np.tile([0.0, 1.0], points_per_class)
    return torch.tensor(points, dtype=torch.float32), torch.tensor(labels, dtype=torch.float32)


def train_plain(
    features: torch.Tensor, target: torch.Tensor, network: nn.Module, steps: int, lr: float = 1e-3
) -> float:
    """The notebook's train_model: full-batch Adam steps, with BCEWithLogits. Returns seconds."""
    criterion = nn.BCEWithLogitsLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=lr)
    started = time.perf_counter()
    for _ in range(steps):
        out = network(features).squeeze(-1)
        loss = criterion(out, target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def main(steps: int) -> None:
    torch.set_num_threads(1)  # as experiment=rings runs (threads: 1), so both do the same work
    torch.manual_seed(0)
    features, target = rings(1000, seed=100)
    network = nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1))
    seconds = train_plain(features, target, network, steps)
    with torch.no_grad():
        accuracy = ((network(features).squeeze(-1) > 0).float() == target).float().mean().item()
    print(f"{steps} steps in {seconds:.2f} s, train accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20000)
