"""How every DataModule serves its in-memory splits: no DataLoader, no per-item work.

The splits live on the training device, moved there once. A training pass draws a shuffled
order, takes this DDP process's share of it, and yields mini-batches made by indexing, grouped
`steps_per_batch` to an item so that Lightning's per-batch work is paid once per group (the
task takes one optimizer step per mini-batch; see nnlab.tasks.base.Task).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device

Parts = tuple[torch.Tensor, ...]  # equal-length tensors: inputs, targets, ...


class SingleBatch:
    """An iterable of exactly one item. Lightning takes any sized iterable as a dataloader."""

    def __init__(self, item: Any) -> None:
        self.item = item

    def __iter__(self) -> Iterator[Any]:
        yield self.item

    def __len__(self) -> int:
        return 1


class Minibatches:
    """Mini-batches of `parts`, made by indexing, optionally shuffled and sharded.

    `prepare` turns the first part into the network's input (uint8 images into floats) for a
    whole item at once. With `steps_per_batch` each item is a list of that many mini-batches;
    without it, one mini-batch. A shuffled pass draws a new order from `generator` each time
    it starts, so epochs differ and runs with the same seed agree. Under DDP, process `rank`
    of `world` takes an equal share, so every process takes the same number of steps.
    """

    def __init__(
        self,
        parts: Parts,
        batch_size: int,
        *,
        generator: torch.Generator | None = None,
        steps_per_batch: int | None = None,
        prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.parts, self.batch_size, self.prepare = parts, batch_size, prepare
        self.generator, self.steps_per_batch = generator, steps_per_batch
        self.rank, self.world = rank, world

    @property
    def steps(self) -> int:
        """Mini-batches per pass: the optimizer steps of one training epoch."""
        return -(-(len(self.parts[0]) // self.world) // self.batch_size)

    def __len__(self) -> int:
        return -(-self.steps // (self.steps_per_batch or 1))

    def __iter__(self) -> Iterator[Parts | list[Parts]]:
        count = len(self.parts[0])
        if self.generator is None:
            order = torch.arange(count)
        else:
            order = torch.randperm(count, generator=self.generator)
        share = count // self.world
        order = order[self.rank * share : (self.rank + 1) * share].to(self.parts[0].device)
        per_item = self.batch_size * (self.steps_per_batch or 1)
        for start in range(0, len(order), per_item):
            chosen = order[start : start + per_item]
            parts = [part[chosen] for part in self.parts]
            if self.prepare is not None:
                parts[0] = self.prepare(parts[0])
            if self.steps_per_batch is None:
                yield tuple(parts)
            else:
                yield list(zip(*(part.split(self.batch_size) for part in parts), strict=True))


class SplitsOnDevice:
    """For a LightningDataModule whose `splits` hold tensors (or objects with `.to`)."""

    splits: dict[str, Any]
    trainer: L.Trainer | None

    def on_device(self, split: str) -> Any:
        """The split on the device that trains, moved there once (not on every step)."""
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        self.splits[split] = move_data_to_device(self.splits[split], device)
        return self.splits[split]

    def rank_and_world(self) -> tuple[int, int]:
        """This process's DDP rank and the number of processes (0 and 1 outside DDP)."""
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
