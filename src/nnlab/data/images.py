"""MNIST and Fashion-MNIST, held in memory as uint8 tensors and batched by indexing.

The notebook's DataLoader turns every image into a PIL image and back on every access. Here
each split is one uint8 tensor (60,000 x 28 x 28 is 47 MB), moved once to the device that
trains, and a batch is `images[indices]` scaled to [0, 1]: no per-item Python work.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from nnlab.config import check_bool, check_choice, check_float, check_int
from nnlab.errors import ConfigError, DataNotFound

log = logging.getLogger("nnlab")

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class DatasetInfo:
    folder: str  # torchvision's folder name under data_dir
    title: str
    classes: tuple[str, ...]
    debian: Path | None  # where Debian's package puts the gzipped idx files, if there is one
    debian_package: str | None


IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
DATASETS = {
    "mnist": DatasetInfo("MNIST", "MNIST", tuple(str(d) for d in range(10)), None, None),
    "fashion_mnist": DatasetInfo(
        "FashionMNIST",
        "Fashion-MNIST",
        (
            "T-shirt",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Boot",
        ),
        Path("/usr/share/datasets/fashion-mnist"),
        "dataset-fashion-mnist",
    ),
}


@dataclass
class Split:
    """uint8 images (n, 28, 28), int64 labels (n,), and each image's index in its idx file."""

    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device), self.index.to(device))


class ImageBatches:
    """Mini-batches of a Split, made by indexing: (images as float, labels).

    `prepare` turns uint8 images into the network's input. With `steps_per_batch` > 1 each item
    is a list of that many mini-batches (the task steps once per mini-batch), prepared together.
    A shuffled pass draws a new order from `generator` each time it starts, so epochs differ
    and runs with the same seed agree. Under DDP, process `rank` of `world` takes its share.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        prepare: Callable[[torch.Tensor], torch.Tensor],
        generator: torch.Generator | None = None,
        steps_per_batch: int | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.split, self.batch_size, self.prepare = split, batch_size, prepare
        self.generator, self.steps_per_batch = generator, steps_per_batch
        self.rank, self.world = rank, world

    def __len__(self) -> int:
        per_item = self.batch_size * (self.steps_per_batch or 1)
        return -(-(len(self.split.labels) // self.world) // per_item)

    def __iter__(self) -> Iterator[Batch | list[Batch]]:
        count = len(self.split.labels)
        if self.generator is None:
            order = torch.arange(count)
        else:
            order = torch.randperm(count, generator=self.generator)
        order = shard(order, self.rank, self.world).to(self.split.labels.device)
        per_item = self.batch_size * (self.steps_per_batch or 1)
        for start in range(0, len(order), per_item):
            chosen = order[start : start + per_item]
            images, labels = self.prepare(self.split.images[chosen]), self.split.labels[chosen]
            if self.steps_per_batch is None:
                yield images, labels
            else:
                yield list(
                    zip(images.split(self.batch_size), labels.split(self.batch_size), strict=True)
                )


def shard(order: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """This DDP process's share of an order that every process drew alike: equal shares, so
    that all processes take the same number of steps (the remainder is left out)."""
    share = len(order) // world
    return order[rank * share : (rank + 1) * share]


class ImageDataModule(L.LightningDataModule):
    """Train, val (a seeded share of the training file) and test splits of MNIST or Fashion-MNIST.

    Inputs are (batch, 1, 28, 28) float32 in [0, 1], or standardised with the training split's
    mean and std when `normalize` is on; labels are int64 class numbers.
    """

    def __init__(
        self,
        dataset: str = "mnist",
        data_dir: str = "data",
        download: bool = True,
        val_fraction: float = 0.1,
        train_subset: int | None = None,
        test_subset: int | None = None,
        normalize: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        steps_per_batch: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.dataset = check_choice("dataset", dataset, DATASETS)
        self.info = DATASETS[dataset]
        self.data_dir = Path(data_dir)
        self.download = check_bool("download", download)
        self.val_fraction = check_float("val_fraction", val_fraction, minimum=0)
        if not self.val_fraction < 1:
            raise ConfigError("val_fraction", val_fraction, "expected a fraction in [0, 1)")
        for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
            if value is not None:
                check_int(name, value, minimum=2)
        self.train_subset, self.test_subset = train_subset, test_subset
        self.normalize = check_bool("normalize", normalize)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.eval_batch_size = check_int("eval_batch_size", eval_batch_size, minimum=1)
        self.steps_per_batch = check_int("steps_per_batch", steps_per_batch, minimum=1)
        self.seed = check_int("seed", seed, minimum=0)
        self.splits: dict[str, Split] = {}
        self.mean, self.std = 0.0, 1.0

    input_features = 28 * 28

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps (mini-batches) per pass over the training split; needs setup()."""
        world = self.trainer.world_size if self.trainer is not None else 1
        return -(-(len(self.splits["train"].labels) // world) // self.batch_size)

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.info.folder / "raw"

    def prepare_data(self) -> None:
        """Make sure the four idx files are in data_dir: there already, from Debian's package, or
        downloaded. Runs once per machine, before setup."""
        if self._files_present():
            return
        if self.info.debian is not None and all(
            (self.info.debian / f"{name}.gz").is_file() for name in IDX_FILES
        ):
            log.info(
                "Unpacking %s from %s into %s", self.info.title, self.info.debian, self.raw_folder
            )
            self.raw_folder.mkdir(parents=True, exist_ok=True)
            for name in IDX_FILES:
                with (
                    gzip.open(self.info.debian / f"{name}.gz") as packed,
                    open(self.raw_folder / name, "wb") as out,
                ):
                    shutil.copyfileobj(packed, out)
            return
        download_error = None
        if self.download:
            download_error = self._download()
            if download_error is None:
                return
        raise self._not_found(download_error)

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # also here: a single process may skip Lightning's prepare_data
        from torchvision.datasets.mnist import read_image_file, read_label_file

        def read(prefix: str) -> Split:
            images = read_image_file(str(self.raw_folder / f"{prefix}-images-idx3-ubyte"))
            labels = read_label_file(str(self.raw_folder / f"{prefix}-labels-idx1-ubyte")).long()
            return Split(images, labels, torch.arange(len(labels)))

        generator = torch.Generator().manual_seed(self.seed)
        train = _subset(read("train"), self.train_subset, generator)
        test = _subset(read("t10k"), self.test_subset, generator)
        order = torch.randperm(len(train.labels), generator=generator)
        val_count = round(self.val_fraction * len(order))
        self.splits = {
            "train": _take(train, order[val_count:]),
            "val": _take(train, order[:val_count]),
            "test": test,
        }
        if self.normalize:  # statistics of the training split only, as the notebook asks
            pixels = self.splits["train"].images.float().div_(255)
            self.mean, self.std = pixels.mean().item(), pixels.std().item()
        log.info(
            "%s: %s train, %s val, %s test images",
            self.info.title,
            *(len(self.splits[s].labels) for s in ("train", "val", "test")),
        )

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 28, 28) -> float (n, 1, 28, 28) in [0, 1]."""
        return images.unsqueeze(1).float().div_(255)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's inputs (standardised when `normalize` is on)."""
        return (images - self.mean) / self.std if self.normalize else images

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.scale(images))

    def on_device(self, split: str) -> Split:
        """The split on the device that trains, moved there once."""
        device = (
            self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        )
        if self.splits[split].images.device != device:
            self.splits[split] = self.splits[split].to(device)
        return self.splits[split]

    def train_dataloader(self) -> ImageBatches:
        generator = torch.Generator().manual_seed(self.seed + 1)
        rank, world = (
            (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        )
        train = self.on_device("train")
        return ImageBatches(
            train, self.batch_size, self.prepare, generator, self.steps_per_batch, rank, world
        )

    def val_dataloader(self) -> ImageBatches:
        return ImageBatches(self.on_device("val"), self.eval_batch_size, self.prepare)

    def test_dataloader(self) -> ImageBatches:
        return ImageBatches(self.on_device("test"), self.eval_batch_size, self.prepare)

    def _not_found(self, download_error: str | None) -> DataNotFound:
        info = self.info
        looked = [f"{self.raw_folder} (the four idx files, unpacked)"]
        ways = ["data.download=true on a machine with internet access"]
        if info.debian is not None:
            looked.append(f"{info.debian} (Debian's {info.debian_package})")
            ways.append(f"`apt-get install {info.debian_package}`")
        ways.append(f"copying {', '.join(IDX_FILES)} into {self.raw_folder}")
        note = (
            f"downloading failed: {download_error}"
            if self.download
            else "downloading is off (data.download=false)"
        )
        return DataNotFound(info.title, looked, note, ways)

    def _files_present(self) -> bool:
        return all((self.raw_folder / name).is_file() for name in IDX_FILES)

    def _download(self) -> str | None:
        """Download with torchvision; the error's first line if it fails."""
        from torchvision import datasets

        cls = getattr(datasets, self.info.folder)
        try:
            cls(str(self.data_dir), train=True, download=True)
            cls(str(self.data_dir), train=False, download=True)
        except Exception as error:  # no network, a proxy, a moved mirror ...
            return (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
        return None


def _subset(split: Split, size: int | None, generator: torch.Generator) -> Split:
    """`size` images drawn without repetition (the notebook's np.random.choice repeated some)."""
    if size is None or size >= len(split.labels):
        return split
    return _take(split, torch.randperm(len(split.labels), generator=generator)[:size])


def _take(split: Split, chosen: torch.Tensor) -> Split:
    return Split(split.images[chosen], split.labels[chosen], split.index[chosen])
