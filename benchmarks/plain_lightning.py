"""The plain Lightning script `make bench` holds nnlab's run of the same module against: the
moons example's LitMoons and MoonsDataModule (examples/moons), trained as Lightning's docs
train a module (a Trainer with TensorBoard and a best checkpoint), then tested.

    python benchmarks/plain_lightning.py LOG_DIR EPOCHS
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "moons"))
from moons.data import MoonsDataModule
from moons.lit_moons import LitMoons


def main(log_dir: str, epochs: int) -> None:
    L.seed_everything(0, workers=True, verbose=False)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=epochs,
        log_every_n_steps=5,
        logger=TensorBoardLogger(log_dir),
        callbacks=[ModelCheckpoint(dirpath=log_dir, monitor="val_loss", save_last=True)],
        enable_model_summary=False,
    )
    model, data = LitMoons(), MoonsDataModule()
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
