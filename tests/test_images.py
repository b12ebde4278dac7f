"""The image tasks on small idx files written here, and on Debian's Fashion-MNIST when installed."""

from __future__ import annotations

import gzip
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import blocky_digits, run_command, trained, write_idx
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnlab.analysis.compare import main as compare_main
from nnlab.checks import DataNotFound
from nnlab.data import images
from nnlab.data.images import ImageDataModule

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def image_run(config, data_dir, *overrides, analyse=False):
    return config(f"paths.data_dir={data_dir}", "data.download=false", *overrides, analyse=analyse)


def test_mlp_learns_the_digits_and_reports_classes_mistakes_and_robustness(
    config, tmp_path, tiny_mnist
):
    metrics = trained(
        image_run(
            config,
            tiny_mnist,
            "experiment=mnist_mlp",
            "trainer.max_epochs=4",
            "data.batch_size=32",
            analyse=True,
        )
    )
    assert metrics["test/acc"] >= 0.95
    assert {f"test/acc_class_{c}" for c in range(10)} <= set(metrics)
    run_dir = tmp_path / "run"
    rows = (run_dir / "robustness.csv").read_text().splitlines()
    assert rows[0] == "perturbation,strength,unit,accuracy" and len(rows) == 1 + 9
    assert metrics["robustness/shift_6"] < metrics["test/acc"]  # the blocks move out of place
    with np.load(run_dir / "test_predictions.npz") as saved:
        assert len(saved["index"]) == 200 and set(saved["index"]) == set(range(200))
        accuracy = float((saved["predicted"] == saved["target"]).mean())
    assert accuracy == pytest.approx(metrics["test/acc"])
    figures = {p.stem for p in (run_dir / "figures").iterdir()}
    assert {"confusion_matrix", "robustness"} <= figures
    per_class = (run_dir / "per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,test images,accuracy" and len(per_class) == 1 + 10

    # TensorBoard: the breakdowns as one table each, not twenty charts of one point
    events = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    events.Reload()
    scalars, texts = events.Tags()["scalars"], events.Tags()["tensors"]
    assert not [t for t in scalars if t.startswith("robustness/") or "acc_class" in t]
    assert {"tables/robustness/text_summary", "tables/per_class/text_summary"} <= set(texts)


def test_autoencoder_search_finds_neighbours_of_the_same_class(config, tmp_path, tiny_mnist):
    metrics = trained(
        image_run(
            config, tiny_mnist, "experiment=mnist_autoencoder", "trainer.max_epochs=6", analyse=True
        )
    )
    assert math.isfinite(metrics["test/loss"]) and metrics["test/loss"] < metrics["train/loss"] * 2
    assert metrics["test/precision_at_5"] > 0.5  # chance is 0.1
    figures = {p.stem for p in (tmp_path / "run" / "figures").iterdir()}
    assert figures == {"reconstructions", "search"}


def test_conv_autoencoder_learns_to_reconstruct(config, tmp_path, tiny_mnist):
    overrides = ["experiment=mnist_autoencoder", "model=conv_autoencoder", "data.batch_size=16"]
    metrics = trained(
        image_run(config, tiny_mnist, *overrides, "trainer.max_epochs=8", analyse=True)
    )
    blank = ((torch.tensor(blocky_digits(200, 2)[0]).float() / 255) ** 2).mean().item()
    assert metrics["test/loss"] < 0.5 * blank  # better than predicting an empty image
    assert (tmp_path / "run" / "figures" / "reconstructions.png").is_file()


def test_val_split_is_seeded_disjoint_and_normalised_with_training_statistics(tiny_mnist):
    data = ImageDataModule(
        data_dir=str(tiny_mnist), download=False, val_fraction=0.25, normalize=True, seed=3
    )
    data.setup()
    train_split, val_split = data.images["train"], data.images["val"]
    assert len(train_split.labels) == 300 and len(val_split.labels) == 100
    assert not set(train_split.index.tolist()) & set(val_split.index.tolist())
    assert data.mean == pytest.approx(train_split.images.float().div(255).mean().item(), rel=1e-5)
    again = ImageDataModule(data_dir=str(tiny_mnist), download=False, val_fraction=0.25, seed=3)
    again.setup()
    assert torch.equal(again.images["val"].index, val_split.index)


def test_subsets_draw_distinct_images(tiny_mnist):
    data = ImageDataModule(
        data_dir=str(tiny_mnist), download=False, train_subset=120, test_subset=50
    )
    data.setup()
    indices = torch.cat([data.images["train"].index, data.images["val"].index])
    assert len(indices) == 120 and len(set(indices.tolist())) == 120
    assert len(set(data.images["test"].index.tolist())) == 50


def test_a_standard_dataloader_serves_every_training_image_once_per_epoch(tiny_mnist):
    data = ImageDataModule(
        data_dir=str(tiny_mnist), download=False, val_fraction=0.1, batch_size=32
    )
    data.setup()
    loader = data.train_dataloader()
    assert isinstance(loader, torch.utils.data.DataLoader)
    batches = list(loader)
    assert len(batches) == len(loader) == 12  # 360 images in batches of 32, the last one of 8
    images, labels = batches[0]
    assert images.shape == (32, 28, 28) and images.dtype == torch.uint8  # scaled on the device
    inputs, _ = data.on_after_batch_transfer((images, labels), 0)
    assert inputs.shape == (32, 1, 28, 28) and inputs.dtype == torch.float32
    assert float(inputs.max()) <= 1.0
    seen = torch.cat([labels for _, labels in batches])
    assert len(seen) == 360 and torch.equal(
        seen.sort().values, data.splits["train"][1].sort().values
    )
    # The order is the epoch's (Lightning sets it): again the same, and new the next epoch.
    assert torch.equal(batches[0][1], next(iter(loader))[1])
    loader.sampler.set_epoch(1)
    assert not torch.equal(batches[0][1], next(iter(loader))[1])


def test_debian_copy_is_unpacked_when_the_files_are_missing(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    for prefix, count in (("train", 60), ("t10k", 20)):
        images_, labels = blocky_digits(count, 0)
        for name, array in (
            (f"{prefix}-images-idx3-ubyte", images_),
            (f"{prefix}-labels-idx1-ubyte", labels),
        ):
            write_idx(tmp_path / name, array)
            (debian / f"{name}.gz").write_bytes(gzip.compress((tmp_path / name).read_bytes()))
    info = images.DATASETS["fashion_mnist"]
    monkeypatch.setitem(
        images.DATASETS, "fashion_mnist", info.__class__(**{**info.__dict__, "debian": debian})
    )
    data = ImageDataModule(
        "fashion_mnist", data_dir=str(tmp_path / "data"), download=False, val_fraction=0.5
    )
    data.setup()
    assert (tmp_path / "data" / "FashionMNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file()
    assert len(data.images["test"].labels) == 20


def test_missing_data_names_where_it_looked_and_the_ways_to_get_it(tmp_path, monkeypatch):
    info = images.DATASETS["fashion_mnist"]
    monkeypatch.setitem(
        images.DATASETS,
        "fashion_mnist",
        info.__class__(**{**info.__dict__, "debian": tmp_path / "nowhere"}),
    )
    data = ImageDataModule("fashion_mnist", data_dir=str(tmp_path / "data"), download=False)
    with pytest.raises(DataNotFound) as missing:
        data.setup()
    message = str(missing.value)
    assert message.startswith(
        f"Fashion-MNIST not found: looked in {tmp_path / 'data' / 'FashionMNIST' / 'raw'}"
    )
    assert (
        str(tmp_path / "nowhere") in message
        and "downloading is off (data.download=false)" in message
    )
    assert (
        "(1) data.download=true" in message
        and "(2) `apt-get install dataset-fashion-mnist`" in message
    )
    assert "(3) copying train-images-idx3-ubyte" in message


def test_missing_data_stops_the_command_with_status_2(cli, tmp_path):
    result = cli(
        "experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'empty'}", "data.download=false"
    )
    assert result.returncode == 2
    assert "MNIST not found: looked in" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "a_file").write_text("not a folder")
    result = cli("experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'a_file'}")
    assert result.returncode == 2
    assert (
        f"bad config paths.data_dir='{tmp_path / 'a_file'}': a file, not a folder" in result.stderr
    )


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda raw: raw.write_bytes(b"\x01\x02\x08\x03" + bytes(12)), "AssertionError"),  # magic
        (lambda raw: raw.write_bytes(b""), "ValueError"),  # an empty file
    ],
)
def test_a_damaged_idx_file_stops_the_command_naming_it(cli, tmp_path, tiny_mnist, damage, reason):
    data_dir = tmp_path / "data"
    (data_dir / "MNIST").mkdir(parents=True)
    for source in (tiny_mnist / "MNIST" / "raw").iterdir():
        (data_dir / "MNIST" / "raw").mkdir(exist_ok=True)
        (data_dir / "MNIST" / "raw" / source.name).write_bytes(source.read_bytes())
    damage(data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte")
    result = cli("experiment=mnist_mlp", f"paths.data_dir={data_dir}", "data.download=false")
    assert result.returncode == 2, result.stderr
    assert "is truncated or not an idx file" in result.stderr and reason in result.stderr
    assert "train-images-idx3-ubyte" in result.stderr and "Traceback" not in result.stderr


def small_images(raw: Path) -> None:  # as many as tiny_mnist's labels
    write_idx(raw, np.zeros((400 if raw.name.startswith("train") else 200, 14, 14), np.uint8))


def labels_out_of_range(raw: Path) -> None:
    write_idx(raw, np.arange(400 if raw.name.startswith("train") else 200) % 20)


@pytest.mark.parametrize(
    ("file", "spoil", "says"),
    [  # each failed with a traceback; those of the test split only after the whole training
        ("train-images-idx3-ubyte", small_images, "holds 14x14 images; MNIST's are 28x28"),
        ("t10k-images-idx3-ubyte", small_images, "holds 14x14 images; MNIST's are 28x28"),
        ("t10k-labels-idx1-ubyte", labels_out_of_range, "holds labels 0..19; MNIST has 10 classes"),
        ("train-labels-idx1-ubyte", lambda raw: raw.mkdir(), "is not a file: remove it"),
    ],
)
def test_data_files_of_the_wrong_shape_or_labels_are_refused_before_training(
    cli, tmp_path, tiny_mnist, file, spoil, says
):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for source in (tiny_mnist / "MNIST" / "raw").iterdir():
        (raw / source.name).write_bytes(source.read_bytes())
    (raw / file).unlink()
    spoil(raw / file)
    overrides = ["experiment=mnist_mlp", f"paths.data_dir={tmp_path / 'data'}"]
    result = cli(*overrides, "data.download=false", "trainer.max_epochs=1")
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("nnlab")]
    assert line.startswith("nnlab: bad config paths.data_dir=") and says in line
    assert not list(tmp_path.rglob("last.ckpt"))  # refused before training


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_real_fashion_mnist_from_the_debian_package_reaches_an_accuracy_floor(config, tmp_path):
    metrics = trained(
        image_run(
            config,
            tmp_path / "data",
            "experiment=fashion_mlp",
            "trainer.max_epochs=2",
            "task.robustness=null",
            analyse=True,  # the predictions it saves
        )
    )
    assert metrics["test/acc"] >= 0.83  # 2 of the default 20 epochs; the full budget reaches 0.887
    with np.load(tmp_path / "run" / "test_predictions.npz") as saved:
        assert len(saved["index"]) == 10_000


def test_compare_command_prints_the_verdict(tmp_path):
    target = np.arange(1000) % 10
    for name, wrong in (("a", 150), ("b", 20)):
        predicted = target.copy()
        predicted[:wrong] = (predicted[:wrong] + 1) % 10
        (tmp_path / name).mkdir()
        np.savez(
            tmp_path / name / "test_predictions.npz",
            index=np.arange(1000),
            target=target,
            predicted=predicted,
        )
    result = run_command(compare_main, [str(tmp_path / "a"), str(tmp_path / "b")], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "test accuracy 0.8500 (850/1000)" in result.stdout
        and "test accuracy 0.9800" in result.stdout
    )
    assert "only A right on 0 images, only B right on 130" in result.stdout
    assert "Verdict: significant at 0.05" in result.stdout


def test_batches_sliced_from_the_epochs_order_are_torchs_batches(tiny_mnist):
    data = ImageDataModule(
        data_dir=str(tiny_mnist), download=False, val_fraction=0.1, batch_size=32
    )
    data.setup()
    loader = data.train_dataloader()
    loader.sampler.set_epoch(3)
    # torch's way: the same sampler, its indices listed one by one for each batch
    torchs = torch.utils.data.DataLoader(
        loader.dataset, batch_size=32, sampler=loader.sampler, collate_fn=loader.collate_fn
    )
    ours, theirs = list(loader), list(torchs)
    assert len(ours) == len(theirs) == 12
    for batch, their_batch in zip(ours, theirs, strict=True):
        assert all(torch.equal(a, b) for a, b in zip(batch, their_batch, strict=True))
    # Another sampler (Lightning's for overfit_batches, DDP's) is batched by torch.
    sequential = type(loader)(
        loader.dataset, batch_size=32, collate_fn=loader.collate_fn,
        sampler=torch.utils.data.SequentialSampler(loader.dataset),
    )  # fmt: skip
    first_labels = next(iter(sequential))[1]
    assert torch.equal(first_labels, data.splits["train"][1][:32])
