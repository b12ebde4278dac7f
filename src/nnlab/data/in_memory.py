"""In-memory splits served by standard DataLoaders: the data path every built-in task shares.

A DataModule here generates or reads its splits once and keeps each as a tuple of equal-length
tensors. Its DataLoaders are torch's own, so Lightning's samplers, `overfit_batches` and DDP's
sharding apply to them as to any; only the way a batch is made differs: one indexing of the
tensors (`__getitems__`), not `batch_size` item lookups and a stack. Measured on an MNIST MLP
epoch at batch 16, item lookups cost more than the optimizer steps they feed.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, Sampler

from nnlab.checks import check_int
from nnlab.data.folds import Dealt, check_folds, fold_of

Batch = tuple[torch.Tensor, ...]  # equal-length tensors: inputs, targets, ...
SPLITS = ("train", "val", "test")


class TensorSplit(Dataset):
    """Equal-length tensors; an item is a tuple of rows, a batch a tuple of row blocks."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index: Any) -> Batch:
        return tuple(tensor[index] for tensor in self.tensors)

    def __getitems__(self, indices: list[int]) -> Batch:
        # DataLoader's fetcher calls this with a whole batch of indices, when it exists.
        return self.rows(torch.as_tensor(indices))

    def rows(self, indices: torch.Tensor) -> Batch:
        """The rows at `indices` (integers), as one block per tensor.

        index_select, not `tensor[indices]`: for a batch of 256 MNIST images (uint8), torch's
        advanced indexing took 124 us and index_select 7.
        """
        return tuple(tensor.index_select(0, indices) for tensor in self.tensors)


def keep_batch(batch: Batch) -> Batch:
    """collate_fn for TensorSplit: `__getitems__` has already made the batch."""
    return batch


class EpochShuffle(Sampler[int]):
    """The indices in a new order each epoch, drawn from (seed, epoch) alone.

    torch's RandomSampler draws each epoch's order from a generator whose state moves on, so a
    resumed run, with a fresh generator, replays the first epoch's order. Here Lightning's
    `set_epoch` picks the order, and a resumed run redraws the order of the epoch it stopped in.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        yield from self.order().tolist()

    def order(self) -> torch.Tensor:
        """This epoch's order of the indices."""
        seed = int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(seed))


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning keeps in checkpoints (its `state_dict` protocol): it counts
    the batches it has given this epoch, and after `load_state_dict` skips that many.

    With an EpochShuffle, a run resumed mid-epoch takes the batches that an uninterrupted run
    takes, so it ends with the same steps and metrics. Skipping draws the batches and drops
    them: any sampler works (DDP's and `overfit_batches`' too), and an in-memory batch costs
    microseconds.

    Over an EpochShuffle, in this process, each batch is one slice of the epoch's order, taken
    from the tensors directly. torch's way, a BatchSampler that lists the indices one by one,
    a tensor made from the list and the fetcher, cost 75 us a batch at batch 256: 4% of an
    MNIST MLP step. With any other sampler (Lightning's for `overfit_batches`, DDP's) or with
    worker processes, batches come torch's way.
    """

    _given = 0
    _skip = 0

    def state_dict(self) -> dict[str, int]:
        # Once the epoch's batches are all given, a resumed run starts a new epoch: none to skip.
        return {"batches_given": self._given if self._given < len(self) else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._skip = int(state["batches_given"])

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        self._given, self._skip = self._skip, 0
        for batch in itertools.islice(self._batches(), self._given, None):
            self._given += 1
            yield batch

    def _batches(self) -> Iterator[Any]:
        sliceable = (
            isinstance(self.sampler, EpochShuffle)
            and type(self.batch_sampler) is BatchSampler
            and isinstance(self.dataset, TensorSplit)
            and self.collate_fn is keep_batch
            and self.num_workers == 0
            and not self.pin_memory
        )
        if not sliceable:
            yield from super().__iter__()
            return
        order, size = self.sampler.order(), self.batch_sampler.batch_size
        for start in range(0, len(self) * size, size):
            yield self.dataset.rows(order[start : start + size])


class WholeSplit(Dataset):
    """One item, the whole split: with batch_size=None, a DataLoader yields it as one batch."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> Batch:
        return self.tensors


class InMemoryDataModule(L.LightningDataModule):
    """Splits held as tensors in `self.splits` ("train", "val", "test"), made in `setup`.

    `batch_size` None trains on the whole training split at each step (full-batch gradient
    descent); an integer draws shuffled mini-batches from it, in an order that `seed` and the
    epoch fix, kept in checkpoints so that a resumed run takes the same batches.
    `eval_batch_size` None evaluates each split as one batch. `folds` and `fold`: k-fold
    cross-validation (nnlab.data.folds), which `make_splits` applies with `with_folds`.
    """

    def __init__(
        self,
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__()
        check_folds(folds, fold)
        self.folds, self.fold = folds, fold
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None:
                check_int(name, value, minimum=1)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed = check_int("seed", seed, minimum=0)
        self.splits: dict[str, Batch] = {}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.make_splits()

    def make_splits(self) -> dict[str, Batch]:
        """The tensors of each split in SPLITS."""
        raise NotImplementedError

    def with_folds(self, splits: dict[str, Batch], how: Dealt) -> dict[str, Batch]:
        """`splits` with the train and val rows pooled and dealt into `folds` folds `how`, fold
        `fold` validating (the targets, second, are the classes to stratify); without folds,
        `splits` as they are."""
        if self.folds is None:
            return splits
        pooled = tuple(torch.cat(pair) for pair in zip(splits["train"], splits["val"], strict=True))
        labels = pooled[1].numpy() if how == "stratified" else None
        val = torch.from_numpy(fold_of(len(pooled[0]), self.folds, self.seed, how, labels))
        val = val == self.fold
        return {
            **splits,
            "train": tuple(t[~val] for t in pooled),
            "val": tuple(t[val] for t in pooled),
        }

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val", self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.loader("test", self.eval_batch_size)

    def loader(self, split: str, batch_size: int | None, shuffle: bool = False) -> DataLoader:
        tensors = self.splits[split]
        if batch_size is None:
            return DataLoader(WholeSplit(*tensors), batch_size=None)
        dataset = TensorSplit(*tensors)
        if not shuffle:
            return DataLoader(dataset, batch_size=batch_size, collate_fn=keep_batch)
        return ResumableLoader(
            dataset,
            batch_size=batch_size,
            sampler=EpochShuffle(len(dataset), self.seed + 1),
            collate_fn=keep_batch,
            # its own generator for the workers' base seed, which would draw on torch's global one
            generator=torch.Generator().manual_seed(self.seed + 1),
        )


def as_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
