"""The private names of other libraries that nnlab uses (nnlab/compat.py) are where nnlab
expects them, and they are the only ones: an upgrade that moves one fails here, naming it,
rather than as a wrong resume somewhere else; a new one fails the scan of src/."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import ClassVar

import lightning as L
import torch
from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from nnlab import compat

SRC = Path(__file__).resolve().parents[1] / "src"


def private_names_used(source: Path) -> set[str]:
    """Private modules imported, and private attributes read, that nnlab's own code does not
    define: `hydra._internal.callbacks`, `trainer.fit_loop._load_combined_loader_states`. (A
    name like Hydra's `_target_`, with one underscore on each side, is public vocabulary.)"""
    trees = [ast.parse(path.read_text()) for path in sorted(source.rglob("*.py"))]
    own, used = set(), set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                own.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                own.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")  # not `metric._update_count = ...`: theirs
            ):
                own.add(node.attr)
    for tree in trees:
        for node in ast.walk(tree):
            modules = []
            if isinstance(node, ast.ImportFrom) and node.module:
                modules = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            for module in modules:
                parts = module.split(".")
                private = [i for i, part in enumerate(parts) if part.startswith("_")]
                if private and parts[0] not in ("nnlab", "hydra_plugins", "__future__"):
                    used.add(module if isinstance(node, ast.Import) else node.module)
            if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                name = node.attr
                if not name.startswith("__") and not name.endswith("_") and name not in own:
                    used.add(name)
    return used


def test_src_uses_only_the_private_names_compat_lists_and_fewer_than_six():
    used = private_names_used(SRC)
    listed = set(compat.PRIVATE_NAMES)
    assert used == {"_load_combined_loader_states", "hydra._internal.callbacks"}
    assert used == listed and len(listed) < 6


class OneParameter(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(4, 1)))


class RecordRunStart(Callback):
    """A Hydra callback that notes the config it was started with."""

    seen: ClassVar[list[str]] = []

    def on_run_start(self, config, **kwargs):
        RecordRunStart.seen.append(config.name)


def test_hydras_callbacks_are_built_from_a_config_and_called():
    target = f"{__name__}.RecordRunStart"
    cfg = OmegaConf.create({"name": "run-7", "hydra": {"callbacks": {"x": {"_target_": target}}}})
    compat.hydra_callbacks(cfg).on_run_start(config=cfg, config_name="train")
    assert RecordRunStart.seen == ["run-7"]


def test_pending_loader_states_reach_the_loaders_of_a_resumed_fit(tmp_path):
    class Remembers(torch.utils.data.DataLoader):
        loaded: ClassVar[list[dict]] = []

        def state_dict(self):
            return {"at": 3}

        def load_state_dict(self, state):
            self.loaded.append(state)

    class Resumed(OneParameter):
        def configure_optimizers(self):
            self.trainer.estimated_stepping_batches  # noqa: B018 - sets the data up before restoring
            return super().configure_optimizers()

        def train_dataloader(self):
            return Remembers(torch.utils.data.TensorDataset(torch.ones(4, 1)))

    class LoadPending(L.Callback):
        def on_train_start(self, trainer, pl_module):
            compat.load_pending_loader_states(trainer)

    class SaveAtStep2(L.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 2:
                trainer.save_checkpoint(tmp_path / "mid.ckpt")

    def trainer(*callbacks):  # the data is set up early for an epoch budget only
        return L.Trainer(
            max_epochs=1, logger=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=tmp_path, callbacks=list(callbacks),
        )  # fmt: skip

    trainer(SaveAtStep2()).fit(Resumed())
    trainer().fit(Resumed(), ckpt_path=tmp_path / "mid.ckpt")
    assert Remembers.loaded == []  # Lightning issue #20550: the state is dropped
    trainer(LoadPending()).fit(Resumed(), ckpt_path=tmp_path / "mid.ckpt")
    assert Remembers.loaded == [{"at": 3}]


def test_lightning_skips_the_empty_hooks_set_to_none_and_calls_the_defined_ones(tmp_path):
    calls = []

    class CountsSteps(L.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            calls.append("callback")

    class CountsBackward(OneParameter):
        def on_after_backward(self):
            calls.append("module")

    callback, module = CountsSteps(), CountsBackward()
    compat.skip_empty_hooks([callback], module)
    assert callback.on_after_backward is None and callback.on_before_optimizer_step is not None
    assert module.on_before_backward is None and module.on_before_optimizer_step is None
    assert module.on_before_zero_grad is None and module.on_train_batch_end is not None
    assert module.on_after_backward is not None
    L.Trainer(
        max_steps=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, default_root_dir=tmp_path, callbacks=[callback],
    ).fit(module)  # fmt: skip
    assert calls == ["module", "callback"] * 2  # a None hook is skipped, not called
