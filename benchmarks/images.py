"""`make bench` (images): an MNIST MLP epoch through nnlab against two plain-PyTorch loops.

1. Batch size 16: against the notebook's own loop (torchvision's MNIST dataset, ToTensor and a
   shuffling DataLoader). Target: nnlab is no slower.
2. Batch size 256: against a plain loop over in-memory tensors. Target: <= 1.25x. nnlab takes
   its batches with index_select, which is much faster than the `images[indices]` a plain loop
   writes; the same loop with index_select is printed too, so that the ratio of the loops alone
   is in view.

Every side trains the same 784-100-10 MLP with Adam at a constant learning rate on the same
60,000 training images, in this process, interleaved, and counts its fastest epoch (setup
excluded) over repeats. nnlab runs `experiment=mnist_mlp` as a user would (TensorBoard,
checkpoints, epoch metrics; no progress bar). A third side, a bare LightningModule over the
same DataLoader with no logger, callbacks or metrics, measures what Lightning's own loop costs
per batch, which no standard-contract task can go below. The images are MNIST-format idx files
written to a temporary folder: the speed does not depend on what they show, and the benchmark
needs no download.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.callbacks import Callback
from torch import nn

from nnlab.data.images import ImageDataModule
from nnlab.train import CONFIG_DIR, build_run

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from conftest import blocky_digits, write_idx

THREADS = 1
EPOCHS = 3  # per run; each side counts its fastest epoch, after warm-up and setup


def write_dataset(data_dir: Path) -> None:
    raw = data_dir / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, count in (("train", 60_000), ("t10k", 10_000)):
        images, labels = blocky_digits(count, seed=0)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)


class EpochTimer(Callback):
    """Seconds per training epoch, from its first batch to its end (not fit's setup)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.started)


def nnlab_epoch(data_dir: Path, log_dir: str, batch_size: int) -> float:
    """nnlab's fastest of EPOCHS epochs over the whole training file (no val split)."""
    overrides = [
        "experiment=mnist_mlp",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tempfile.mkdtemp(dir=log_dir)}",
        "data.download=false",
        "data.val_fraction=0",
        f"data.batch_size={batch_size}",
        f"trainer.max_epochs={EPOCHS}",
        "trainer.limit_val_batches=0",  # as a user would: no best.ckpt, last.ckpt each epoch
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "task.lr_schedule=constant",  # as the plain loops
        f"threads={THREADS}",
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    run = build_run(cfg)
    timer = EpochTimer()
    run.trainer.callbacks.append(timer)
    run.trainer.fit(run.task, datamodule=run.datamodule)
    return min(timer.seconds)


class BareMLP(L.LightningModule):
    """The MLP as the smallest LightningModule: the floor of Lightning's per-batch cost."""

    def __init__(self, data: ImageDataModule) -> None:
        super().__init__()
        self.network, self.data = mlp(), data

    def training_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int
    ) -> torch.Tensor:
        images, labels = batch
        return nn.functional.cross_entropy(self.network(self.data.prepare(images)), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=2e-3)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return self.data.train_dataloader()


def bare_lightning_epoch(data_dir: Path, batch_size: int) -> float:
    data = ImageDataModule(
        data_dir=str(data_dir), download=False, val_fraction=0.0, batch_size=batch_size
    )
    data.setup()
    timer = EpochTimer()
    trainer = L.Trainer(
        max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )  # fmt: skip
    trainer.fit(BareMLP(data))
    return min(timer.seconds)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))


def notebook_epoch(data_dir: Path, batch_size: int) -> float:
    """The notebook's train_image_model loop: torchvision dataset, ToTensor, DataLoader."""
    from torchvision import transforms
    from torchvision.datasets import MNIST

    dataset = MNIST(str(data_dir), train=True, download=False, transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True)
    network, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    seconds = []
    for _ in range(EPOCHS):
        started = time.perf_counter()
        for images, labels in loader:
            loss = criterion(network(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def tensor_epoch(data_dir: Path, batch_size: int, index_select: bool = False) -> float:
    """A plain loop over the training file held as one tensor: shuffle, index, scale, step."""
    from torchvision.datasets.mnist import read_image_file, read_label_file

    raw = data_dir / "MNIST" / "raw"
    images = read_image_file(str(raw / "train-images-idx3-ubyte"))
    labels = read_label_file(str(raw / "train-labels-idx1-ubyte")).long()
    network, criterion = mlp(), nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    seconds = []
    for _ in range(EPOCHS):
        started = time.perf_counter()
        order = torch.randperm(len(labels))
        for start in range(0, len(labels), batch_size):
            chosen = order[start : start + batch_size]
            if index_select:
                rows, targets = images.index_select(0, chosen), labels.index_select(0, chosen)
            else:
                rows, targets = images[chosen], labels[chosen]
            loss = criterion(network(rows.unsqueeze(1).float().div_(255)), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="runs per side (the fastest counts)")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        write_dataset(data_dir)
        results = []
        for batch_size, baseline, name, target in (
            (16, notebook_epoch, "the notebook's DataLoader loop", "<= 1.0x"),
            (256, tensor_epoch, "a plain loop over tensors", "<= 1.25x"),
        ):
            plain, ours, bare, selecting = [], [], [], []
            for repeat in range(args.repeats):
                plain.append(baseline(data_dir, batch_size))
                ours.append(nnlab_epoch(data_dir, scratch, batch_size))
                bare.append(bare_lightning_epoch(data_dir, batch_size))
                done = (
                    f"{plain[-1]:.2f} s plain, {ours[-1]:.2f} s nnlab, {bare[-1]:.2f} s Lightning"
                )
                if baseline is tensor_epoch:
                    selecting.append(tensor_epoch(data_dir, batch_size, index_select=True))
                    done += f", {selecting[-1]:.2f} s plain with index_select"
                print(f"  batch {batch_size}, run {repeat + 1}: {done}", flush=True)
            fastest = [min(times) if times else None for times in (plain, ours, bare, selecting)]
            results.append((batch_size, name, *fastest, target))
    print(
        f"\ntorch {torch.__version__}, {THREADS} thread, 60,000 images per epoch, fastest of each"
    )
    for batch_size, name, plain, ours, bare, selecting, target in results:
        line = (
            f"MNIST MLP, batch {batch_size:<4} {name:<32} {plain:6.2f} s   nnlab {ours:6.2f} s   "
            f"ratio {ours / plain:.2f}x (target {target}); bare Lightning {bare / plain:.2f}x"
        )
        if selecting:
            line += f"; against the plain loop with index_select {ours / selecting:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
