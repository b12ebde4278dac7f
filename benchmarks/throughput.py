"""Training throughput of an image experiment, in images per second of its fastest epoch.

    python benchmarks/throughput.py --trainer gpu                 # mnist_cnn on the GPU
    python benchmarks/throughput.py --trainer cpu --epochs 2

The 60,000 training images are MNIST-format idx files written to a temporary folder (the speed
does not depend on what they show), so no download is needed. Validation is off: the figure is
the training loop's alone, data preparation and logging included.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from nnlab.train import CONFIG_DIR, build_run

sys.path.insert(0, str(Path(__file__).parent))
threads_asked = os.environ.get("NNLAB_THREADS")
from images import EpochTimer, write_dataset  # noqa: E402  (it imports the tests' helpers...)

if threads_asked is None:  # ...which pin torch to one thread: measure with nnlab's own choice
    os.environ.pop("NNLAB_THREADS", None)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="mnist_cnn")
    parser.add_argument("--trainer", default="gpu", help="cpu, gpu, ... (a conf/trainer/ file)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        data_dir = Path(scratch) / "data"
        write_dataset(data_dir)
        overrides = [
            f"experiment={args.experiment}",
            f"trainer={args.trainer}",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={scratch}/run",
            "data.download=false",
            "data.val_fraction=0",
            f"data.batch_size={args.batch_size}",
            f"trainer.max_epochs={args.epochs}",
            "trainer.limit_val_batches=0",
            "trainer.enable_progress_bar=false",
        ]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides)
        run = build_run(cfg)
        timer = EpochTimer()
        run.trainer.callbacks.append(timer)
        run.trainer.fit(run.task, datamodule=run.datamodule)
        device = run.trainer.strategy.root_device
    if not run.trainer.is_global_zero:
        return  # under DDP the processes share each epoch's 60,000 images; rank 0 reports
    images = 60_000
    best = min(timer.seconds)
    print(
        f"{args.experiment} on {device} ({args.trainer}), batch {args.batch_size}: "
        f"{images / best:,.0f} training images/s (fastest of {args.epochs} epochs, {best:.2f} s)"
    )


if __name__ == "__main__":
    main()
