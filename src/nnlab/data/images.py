"""MNIST and Fashion-MNIST, held in memory as uint8 tensors and batched by indexing.

The notebook's DataLoader turns every image into a PIL image and back on every access. Here
each split is one uint8 tensor (60,000 x 28 x 28 is 47 MB), a batch is `images[indices]`
(nnlab.data.in_memory), scaled to [0, 1] on the device that trains: no per-item Python work.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nnlab.checks import (
    BadValue,
    DataNotFound,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_path,
)
from nnlab.data.folds import fold_of
from nnlab.data.in_memory import Batch, InMemoryDataModule

log = logging.getLogger("nnlab")


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


class ImageDataModule(InMemoryDataModule):
    """Train, val (a seeded share of the training file) and test splits of MNIST or Fashion-MNIST.

    Batches leave the DataLoader as uint8 images and int64 labels, the smallest form to move to
    the GPU; `on_after_batch_transfer` (a Lightning hook, run on the training device) turns the
    images into the network's inputs: (batch, 1, 28, 28) float32 in [0, 1], or standardised
    with the training split's mean and std when `normalize` is on.
    """

    input_features = 28 * 28

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
        seed: int = 0,
        folds: int | None = None,
        fold: int = 0,
    ) -> None:
        super().__init__(
            check_int("batch_size", batch_size, minimum=1),
            check_int("eval_batch_size", eval_batch_size, minimum=1),
            seed,
            folds,
            fold,
        )
        self.dataset = check_choice("dataset", dataset, DATASETS)
        self.info = DATASETS[dataset]
        self.data_dir = Path(check_path("data_dir", data_dir))
        self.download = check_bool("download", download)
        self.val_fraction = check_float("val_fraction", val_fraction, minimum=0)
        if not self.val_fraction < 1:
            raise BadValue("val_fraction", val_fraction, "expected a fraction in [0, 1)")
        for name, value in (("train_subset", train_subset), ("test_subset", test_subset)):
            if value is not None:
                check_int(name, value, minimum=2)
        self.train_subset, self.test_subset = train_subset, test_subset
        self.normalize = check_bool("normalize", normalize)
        self.images: dict[str, Split] = {}
        self.mean, self.std = 0.0, 1.0

    @property
    def classes(self) -> tuple[str, ...]:
        return self.info.classes

    @property
    def raw_folder(self) -> Path:
        return self.data_dir / self.info.folder / "raw"

    def prepare_data(self) -> None:
        """Make sure the four idx files are in data_dir: there already, from Debian's package, or
        downloaded. Runs once per machine, before setup."""
        if self._files_present():
            return
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise BadValue("data_dir", str(self.data_dir), "a file, not a folder")
        for name in IDX_FILES:  # unpacking or downloading would write into it
            if (self.raw_folder / name).exists() and not (self.raw_folder / name).is_file():
                reason = f"{self.raw_folder / name} is not a file: remove it to fetch the data"
                raise BadValue("data_dir", str(self.data_dir), reason)
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

    def make_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.prepare_data()  # also here: a single process may skip Lightning's prepare_data
        generator = torch.Generator().manual_seed(self.seed)
        train = _subset(self._read("train"), self.train_subset, "train_subset", generator)
        test = _subset(self._read("t10k"), self.test_subset, "test_subset", generator)
        order = torch.randperm(len(train.labels), generator=generator)
        val_count = round(self.val_fraction * len(order))
        if self.folds is not None:  # the training file's images, dealt into folds by class
            labels = train.labels.numpy()
            dealt = fold_of(len(labels), self.folds, self.seed, "stratified", labels)
            order = torch.from_numpy(np.argsort(dealt != self.fold, kind="stable"))
            val_count = int((dealt == self.fold).sum())
        self.images = {
            "train": _take(train, order[val_count:]),
            "val": _take(train, order[:val_count]),
            "test": test,
        }
        if self.normalize:  # statistics of the training split only, as the notebook asks
            pixels = self.images["train"].images.float().div_(255)
            self.mean, self.std = pixels.mean().item(), pixels.std().item()
        log.info(
            "%s: %s train, %s val, %s test images",
            self.info.title,
            *(len(self.images[s].labels) for s in ("train", "val", "test")),
        )
        return {name: (split.images, split.labels) for name, split in self.images.items()}

    def on_after_batch_transfer(self, batch: Batch, dataloader_idx: int) -> Batch:
        images, labels = batch
        return self.prepare(images), labels

    def scale(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (n, 28, 28) -> float (n, 1, 28, 28) in [0, 1]."""
        return images.unsqueeze(1).float().div_(255)

    def standardize(self, images: torch.Tensor) -> torch.Tensor:
        """[0, 1] images -> the network's inputs (standardised when `normalize` is on)."""
        return (images - self.mean) / self.std if self.normalize else images

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.standardize(self.scale(images))

    def _read(self, prefix: str) -> Split:
        from torchvision.datasets.mnist import read_image_file, read_label_file

        images_file = self.raw_folder / f"{prefix}-images-idx3-ubyte"
        labels_file = self.raw_folder / f"{prefix}-labels-idx1-ubyte"
        try:
            images = read_image_file(str(images_file))
            labels = read_label_file(str(labels_file)).long()
        except Exception as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise BadValue(
                "data_dir",
                str(self.data_dir),
                f"{images_file.name} or {labels_file.name} in {self.raw_folder} is truncated or "
                f"not an idx file ({type(error).__name__}{': ' + reason if reason else ''}); "
                "delete the folder to fetch the files again",
            ) from None
        if images.ndim != 3 or len(images) != len(labels):
            raise BadValue(
                "data_dir",
                str(self.data_dir),
                f"{images_file.name} holds {tuple(images.shape)} images for {len(labels)} labels",
            )
        # Checked for every split before training: an image of another size failed at the first
        # step, and a test label out of range only after the whole training.
        if tuple(images.shape[1:]) != (28, 28):
            size = "x".join(map(str, images.shape[1:]))
            reason = f"{images_file.name} holds {size} images; {self.info.title}'s are 28x28"
            raise BadValue("data_dir", str(self.data_dir), reason)
        classes = len(self.info.classes)
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < classes:
            found = f"{int(labels.min())}..{int(labels.max())}"
            reason = f"{labels_file.name} holds labels {found}; {self.info.title} has {classes}"
            raise BadValue("data_dir", str(self.data_dir), reason + f" classes, 0..{classes - 1}")
        return Split(images, labels, torch.arange(len(labels)))

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
        except Exception as error:
            causes = [error, error.__cause__, error.__context__]
            reasons = [f"{type(e).__name__}: {e}".strip().splitlines()[0] for e in causes if e]
            return f"{'; '.join(dict.fromkeys(reasons))} (is there a network connection?)"
        return None


def _subset(split: Split, size: int | None, key: str, generator: torch.Generator) -> Split:
    """`size` images drawn without repetition (the notebook's np.random.choice repeated some)."""
    if size is None:
        return split
    if size > len(split.labels):
        raise BadValue(key, size, f"the file holds only {len(split.labels)} images")
    return _take(split, torch.randperm(len(split.labels), generator=generator)[:size])


def _take(split: Split, chosen: torch.Tensor) -> Split:
    return Split(split.images[chosen], split.labels[chosen], split.index[chosen])
