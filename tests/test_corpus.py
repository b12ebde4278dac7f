"""Lightning code written the ways its users write it (tests/corpus/) gets every guarantee nnlab
gives its own tasks: each module trains through nnlab with no nnlab-specific setting, is
stopped mid-epoch by SIGTERM and resumed to the uninterrupted run's metrics, is tested again
by nnlab-eval, and loads with nnlab.api.load_run and with Lightning's load_from_checkpoint,
weights-only."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from conftest import read_metrics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from nnlab.api import load_run, train
from nnlab.errors import ConfigError, Diverged, Interrupted
from nnlab.run.eval import evaluate

CORPUS = Path(__file__).resolve().parent / "corpus"
SEARCHPATH = f"hydra.searchpath=[file://{CORPUS / 'conf'}]"
# Each module, and an optimizer step in its second epoch to stop at: a shuffled loader's
# order is drawn anew each epoch, and the stop falls mid-way through one.
MODULES = {
    "lht": 22,  # lightning-hydra-template's MNISTLitModule and MNISTDataModule: 15 batches an epoch
    "underscore": 20,  # train_loss/val_loss, dropout, ReduceLROnPlateau: 13 batches an epoch
    "gan": 24,  # two optimizers, manual optimization: 8 batches, 16 steps an epoch
    "dict": 18,  # dict batches, a seeded RandomSampler, OneCycleLR over the whole budget: 12
    "no_val": 18,  # no validation at all: 12 batches an epoch
    "epoch_end": 17,  # torchmetrics logged at epoch ends, StepLR, a loader's generator: 12
}


def run(name: str, log_dir: Path, *overrides: str):
    return train([SEARCHPATH, f"experiment=corpus_{name}", f"paths.log_dir={log_dir}", *overrides])


def curve(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    """A scalar's (step, value) points in TensorBoard, over every event file of the run."""
    points = []
    for events_file in sorted(run_dir.rglob("events.out.tfevents*")):
        events = EventAccumulator(str(events_file))
        events.Reload()
        if tag in events.Tags()["scalars"]:
            points += [(event.step, round(event.value, 6)) for event in events.Scalars(tag)]
    return points


# Under DDP (one process here), Lightning gives the loader a DistributedSampler of its own. At
# an epoch's last step the stop waits for its validation, and the resume starts after it.
RESUMED = [
    *((name, [], step) for name, step in MODULES.items()),
    ("underscore", ["trainer=ddp_cpu", "trainer.devices=1"], MODULES["underscore"]),
    ("underscore", [], 13),
]
IDS = ["lht", "underscore", "gan", "dict", "no_val", "epoch_end", "ddp", "at an epoch's end"]


@pytest.mark.parametrize(("name", "strategy", "step"), RESUMED, ids=IDS)
def test_a_module_stopped_mid_epoch_resumes_to_the_uninterrupted_runs_metrics(
    name, strategy, step, tmp_path, capsys
):
    whole = run(name, tmp_path / "whole", *strategy)
    stop = [
        *strategy,
        "+callbacks.stop._target_=corpus.stop.SigtermAt",
        f"+callbacks.stop.step={step}",
    ]
    with pytest.raises(Interrupted):
        run(name, tmp_path / "stopped", *stop)
    (run_dir,) = (tmp_path / "stopped" / f"corpus_{name}" / "runs").iterdir()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == step

    capsys.readouterr()
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        resumed = run(name, tmp_path / "stopped", *stop, "ckpt_path=last")
    assert resumed.run_dir == run_dir
    told = capsys.readouterr()
    said = told.out + told.err + "".join(str(w.message) for w in warned)
    assert "could not find the monitored key" not in said
    assert "not resumable" not in said  # the loader is, now
    expected, got = read_metrics(whole.run_dir), read_metrics(run_dir)
    assert got.pop("status") == expected.pop("status") == "completed"
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-7)
    if name == "lht":  # torchmetrics' running sums resume too: each epoch's mean, once
        assert curve(run_dir, "train/loss") == curve(whole.run_dir, "train/loss")
        assert [step for step, _ in curve(run_dir, "train/loss")] == [14, 29, 44]
    for kept in ("best", "last") if (whole.run_dir / "checkpoints" / "best.ckpt").exists() else ():
        ours = torch.load(run_dir / "checkpoints" / f"{kept}.ckpt", weights_only=True)
        theirs = torch.load(whole.run_dir / "checkpoints" / f"{kept}.ckpt", weights_only=True)
        assert ours["global_step"] == theirs["global_step"], kept  # the same epoch is best
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    uninterrupted = torch.load(whole.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for key, tensor in uninterrupted["state_dict"].items():
        torch.testing.assert_close(final[key], tensor, msg=key)


@pytest.mark.parametrize("name", ["lht", "underscore", "dict", "no_val"])
def test_a_modules_checkpoint_is_evaluated_and_loaded_weights_only(name, tmp_path):
    trained = run(name, tmp_path, "trainer.max_epochs=1")
    tested = {k: v for k, v in trained.metrics.items() if k.startswith("test")}
    assert tested, "every module here has a test_step"

    assert evaluate(trained.run_dir, "last", [SEARCHPATH]) == pytest.approx(tested)
    loaded = load_run(trained.run_dir, "last", [SEARCHPATH])
    assert type(loaded.task) is type(trained.task)
    weights = torch.load(trained.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    for key, tensor in loaded.task.state_dict().items():
        torch.testing.assert_close(tensor, weights["state_dict"][key], msg=key)

    # Lightning's own loader, weights-only as torch loads by default: a module that ignores
    # an argument in save_hyperparameters (lightning-hydra-template's `net`) is given it.
    given = {"net": loaded.task.net} if name == "lht" else {}
    again = type(trained.task).load_from_checkpoint(
        trained.run_dir / "checkpoints" / "last.ckpt", **given
    )
    for key, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, weights["state_dict"][key], msg=key)


def test_lightning_hydra_templates_partials_are_kept_as_their_configs(tmp_path):
    """Kept as data, a checkpoint loads weights-only in a fresh interpreter, where no
    allow-list of nnlab's is set (here: torch's cleared), with Lightning's own loader."""
    import hydra.utils

    trained = run("lht", tmp_path, "trainer.max_epochs=1")
    last = trained.run_dir / "checkpoints" / "last.ckpt"
    allowed = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        saved = torch.load(last, weights_only=True)
        again = type(trained.task).load_from_checkpoint(last, net=trained.task.net)
    finally:
        torch.serialization.add_safe_globals(allowed)
    optimizer = saved["hyper_parameters"]["optimizer"]
    assert optimizer == {
        "_target_": "torch.optim.adam.Adam", "_partial_": True, "lr": 0.001, "weight_decay": 0.0
    }  # fmt: skip
    made = hydra.utils.instantiate(optimizer)
    assert made.func is torch.optim.Adam and made.keywords == {"lr": 0.001, "weight_decay": 0.0}
    assert saved["hyper_parameters"]["scheduler"]["_target_"].endswith("ReduceLROnPlateau")
    assert saved["datamodule_hyper_parameters"]["train_val_test_split"] == [480, 160, 160]
    for key, tensor in again.state_dict().items():
        torch.testing.assert_close(tensor, saved["state_dict"][key], msg=key)


def test_the_best_checkpoint_follows_the_validation_loss_the_module_logs(tmp_path):
    trained = run("underscore", tmp_path, "trainer.max_epochs=2")
    best = torch.load(trained.run_dir / "checkpoints" / "best.ckpt", weights_only=True)
    (state,) = [v for k, v in best["callbacks"].items() if k.startswith("ModelCheckpoint")]
    assert state["monitor"] == "val_loss"
    assert float(state["best_model_score"]) == pytest.approx(trained.metrics["val_loss"], abs=0.1)


def test_a_modules_own_validation_and_test_loaders_give_the_final_validation_and_the_test(
    tmp_path,
):
    from corpus.no_validation import lines

    # The last of 3 epochs is not validated in training.
    trained = run("own_loaders", tmp_path, "trainer.check_val_every_n_epoch=2")
    assert {"val_loss", "test_mse"} <= set(trained.metrics)
    last = torch.load(trained.run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 36
    weight, bias = last["state_dict"]["line.weight"], last["state_dict"]["line.bias"]
    x, y = lines(120, 140).tensors
    final = torch.nn.functional.mse_loss(x @ weight.T + bias, y)  # the final weights' validation
    assert trained.metrics["val_loss"] == pytest.approx(float(final), rel=1e-4)


def test_a_module_without_a_validation_loss_stops_before_training_naming_its_keys(tmp_path):
    accuracy_only = ["task._target_=corpus.underscore_names.AccuracyOnly", "trainer.max_epochs=1"]
    with pytest.raises(ConfigError) as raised:
        run("underscore", tmp_path / "auto", *accuracy_only)
    assert raised.value.key == "callbacks.model_checkpoint.monitor"
    assert (  # at Lightning's sanity check: no training step yet, so no train_loss
        "(it logs: val_acc); name one, e.g. callbacks.model_checkpoint.monitor="
        "val_acc callbacks.model_checkpoint.mode=max" in str(raised.value)
    )
    (run_dir,) = (tmp_path / "auto" / "corpus_underscore" / "runs").iterdir()
    assert not (run_dir / "checkpoints").exists()  # before any checkpoint

    chosen = ["callbacks.model_checkpoint.monitor=val_acc", "callbacks.model_checkpoint.mode=max"]
    trained = run("underscore", tmp_path / "chosen", *accuracy_only, *chosen)
    assert (trained.run_dir / "checkpoints" / "best.ckpt").is_file()


def test_a_module_whose_hyperparameters_a_weights_only_load_refuses_is_told_at_the_start(
    tmp_path, capsys
):
    keeps_its_net = ["task._target_=corpus.lht_mnist.KeepsItsNet", "trainer.max_epochs=1"]
    trained = run("lht", tmp_path, *keeps_its_net)
    told = capsys.readouterr().err.splitlines()
    (line,) = [line.removeprefix("warning: ") for line in told if "weights-only" in line]
    assert line.startswith(
        "KeepsItsNet's save_hyperparameters() keeps corpus.lht_mnist.SimpleDenseNet, "
        "torch.nn.modules.activation.ReLU, torch.nn.modules.batchnorm.BatchNorm1d and 2 more, "
        "which a weights-only load refuses: resuming, nnlab-eval and load_run will refuse its "
        "checkpoints"
    )
    with pytest.raises(ConfigError, match="refused: it holds Python objects beyond weights"):
        load_run(trained.run_dir, "last", [SEARCHPATH, keeps_its_net[0]])


def test_a_gan_whose_losses_turn_nan_under_manual_optimization_stops_as_diverged(tmp_path):
    with pytest.raises(Diverged) as raised:
        run("gan", tmp_path, "+task.lr=1e15")
    assert "diverged: the training loss is nan at step" in str(raised.value)
    (run_dir,) = (tmp_path / "corpus_gan" / "runs").iterdir()
    assert read_metrics(run_dir)["status"] == "diverged"


def test_a_short_epoch_logs_its_per_step_values_once_an_epoch(tmp_path):
    trained = run("underscore", tmp_path, "trainer.max_epochs=2")  # 13 batches an epoch, 26 steps
    events = EventAccumulator(str(trained.run_dir))
    events.Reload()
    assert [event.step for event in events.Scalars("train_loss")] == [12, 25]


def test_a_constructor_argument_given_text_for_a_number_is_refused_under_its_key(tmp_path):
    with pytest.raises(ConfigError) as refused:
        run("underscore", tmp_path, "+task.hidden=abc")
    assert str(refused.value) == (
        "bad config task.hidden='abc': expected an integer (Classifier's hidden defaults to 16)"
    )


def test_nnlab_eval_of_a_module_without_a_test_step_says_there_is_nothing_to_test(tmp_path):
    trained = run("gan", tmp_path, "trainer.max_epochs=1")
    with pytest.raises(ConfigError, match=r"GAN has no test_step .*: nothing to test"):
        evaluate(trained.run_dir, "last", [SEARCHPATH])
    assert not (trained.run_dir / "evals").exists() or not any(
        (trained.run_dir / "evals").iterdir()
    )


def test_a_stream_resumed_mid_epoch_says_in_one_line_that_the_resume_is_not_exact(tmp_path, capsys):
    stream = ["data._target_=corpus.underscore_names.StreamData", "trainer.max_epochs=2"]
    stop = ["+callbacks.stop.step=10", "+callbacks.stop._target_=corpus.stop.SigtermAt"]
    with pytest.raises(Interrupted):
        run("underscore", tmp_path, *stream, *stop)
    capsys.readouterr()
    resumed = run("underscore", tmp_path, *stream, *stop, "ckpt_path=last")
    assert resumed.metrics["status"] == "completed"
    told = [line for line in capsys.readouterr().err.splitlines() if "mid-epoch" in line]
    assert told == [
        "warning: Resuming mid-epoch: the training loader DataLoader cannot take up its epoch "
        "where it stopped (an IterableDataset without state_dict), so it starts it again: the "
        "resumed run is not exact"
    ]
