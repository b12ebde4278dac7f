"""Bad config values stop the run before training, with one message naming the key and the value."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_dirs


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model.hidden_nodes=0", "model.hidden_nodes=0: expected a positive integer"),
        ("model.hidden_nodes=-3", "model.hidden_nodes=-3: expected a positive integer"),
        (
            "model.activation=sigmod",
            "model.activation='sigmod': expected one of: sigmoid, relu, tanh",
        ),
        ("optimizer.lr=0", "optimizer.lr=0: expected a number > 0"),
        ("optimizer.lr=-0.1", "optimizer.lr=-0.1: expected a number > 0"),
        ("trainer.max_steps=-5", "trainer.max_steps=-5: expected an integer >= 1"),
        ("+model.hidden_size=4", "model.hidden_size=4: unknown key; MLP takes: in_features"),
        ("data.train_per_class=zero", "data.train_per_class='zero': expected an integer"),
        ("data.inner_radius=[1,0]", "data.inner_radius=[1, 0]: expected low < high"),
        ("task.steps_per_batch=0", "task.steps_per_batch=0: expected an integer >= 1"),
        ("optimizer._target_=torch.optim.Nope", "optimizer._target_='torch.optim.Nope': cannot be"),
        ("model.hidden_layers=two", "model.hidden_layers='two': expected an integer"),
        ("trainer.max_epochs=abc", "trainer.max_epochs='abc': expected an integer"),
        ("trainer.val_check_interval=0", "trainer.val_check_interval=0: expected an integer >= 1"),
        ("trainer.num_nodes=3", "trainer.num_nodes=3: several nodes need a cluster launcher"),
        ("trainer.devices=5000", "trainer.devices=5000: DDP on the CPU runs a process per device"),
        ("model.hidden_layers=42378759", "model.hidden_layers=42378759: expected at most 10,000"),
        ("task.network={a: 1}", "task.network: expected a torch.nn.Module or its config"),
        ("model.hidden_nodes=2000000000", "model: the network would have 8,000,000,001 param"),
        (  # it took 13 GB and minutes at step 0, deaf to SIGTERM inside its one huge step
            "data.train_per_class=1000000000",
            "data.train_per_class=1000000000: 2,000,002,000 points, drawn and trained on in one",
        ),
        (
            "trainer.accumulate_grad_batches=0",
            "trainer.accumulate_grad_batches=0: expected an integer >= 1",
        ),
        ("seed=4294967296", "seed=4294967296: expected an integer <= 4294967295"),
        (
            "callbacks.model_checkpoint.mode=maximum",
            "callbacks.model_checkpoint: `mode` can be min",
        ),
    ],
)
def test_bad_value_stops_with_one_clear_message(cli, tmp_path, override, expected):
    result = cli("experiment=rings", override)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    (run_dir,) = run_dirs(tmp_path / "logs")
    assert read_metrics(run_dir)["status"].startswith(f"failed: bad config {expected}")
    assert not (run_dir / "checkpoints").exists()  # stopped before training


@pytest.mark.parametrize(
    ("experiment", "override", "expected"),
    [
        (
            "mnist_autoencoder",
            "model.code_size=100000000",
            "model: the network would have 156,900,000,784 parameters, 2,338.0 GiB with",
        ),
        (
            "series_rnn",
            "model.hidden_size=1000000",
            "model: the network would have 4,000,013,000,001 parameters",
        ),
        (  # its first layer alone would take 320 GB: the shapes are judged before it is made
            "fashion_cnn",
            "model.kernel_size=100000",
            "model.channels=[16, 64, 128]: too many blocks for 28x28 images with kernel_size 1000",
        ),
    ],
)
def test_a_network_too_large_for_memory_is_refused_before_it_takes_any(
    cli, tmp_path, experiment, override, expected
):
    result = cli(f"experiment={experiment}", override, f"paths.data_dir={tmp_path / 'none'}")
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_trainer_without_a_gpu_says_what_to_use(cli):
    result = cli("experiment=rings", "trainer=gpu")
    assert result.returncode == 2
    assert "bad config trainer.accelerator='gpu': torch sees no CUDA GPU" in result.stderr
    assert "trainer=cpu" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "model.hidden_size=4",
            "model.hidden_size: unknown key; model has: _target_, in_features, out_features,",
        ),
        ("modle.hidden_nodes=3", "modle: unknown key; the config has: task_name,"),
        ("experiment=ringz", "experiment='ringz': no such option; available: fashion_cnn,"),
        ("optimizer=adamm", "optimizer='adamm': no such option; available: adam, adamw, sgd"),
    ],
)
def test_keys_and_options_that_do_not_exist_are_named_with_the_ones_that_do(
    cli, tmp_path, override, expected
):
    result = cli("experiment=rings", override)
    assert result.returncode == 2
    assert f"nnlab: bad config {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "logs").exists()  # refused before Hydra made a run dir


def test_unwritable_log_dir_is_refused_before_the_run(cli, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = cli("experiment=rings", f"paths.log_dir={blocker / 'logs'}")
    assert result.returncode == 2
    refused = f"bad config paths.log_dir='{blocker / 'logs'}': cannot write there (Not a directory"
    assert refused in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_a_log_dir_the_file_system_refuses_though_access_allows_it_is_named(
    cli, tmp_path, monkeypatch
):
    """In /proc as root, os.access says writable and mkdir refuses (NFS with root_squash does
    the same): Hydra's mkdir of the run dir ended in its traceback. os.access answers here as
    it does for root, whoever runs the test."""
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)
    result = cli("experiment=rings", "paths.log_dir=/proc/nnlab_logs")
    assert result.returncode == 2, result.stderr
    refused = "bad config paths.log_dir='/proc/nnlab_logs': cannot make the run's dir there ("
    assert refused in result.stderr and ": /proc/nnlab_logs)" in result.stderr
    assert "Traceback" not in result.stderr

    # Once the run has its dir, an error naming it is not the log dir's: it keeps its traceback
    from nnlab.tasks.rings import RingsTask

    def on_validation_start(self):
        raise OSError(errno.ESTALE, os.strerror(errno.ESTALE), self.trainer.default_root_dir)

    monkeypatch.setattr(RingsTask, "on_validation_start", on_validation_start)
    result = cli("experiment=rings", "trainer.max_steps=100", f"paths.log_dir={tmp_path / 'kept'}")
    assert result.returncode == 1 and "OSError: [Errno 116] Stale file handle" in result.stderr
    assert "cannot make the run's dir" not in result.stderr


def test_full_error_shows_the_traceback_for_debugging(cli, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    result = cli("experiment=rings", "model.hidden_nodes=0")
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "model.hidden_nodes=0" in result.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["+seeds=0"], "bad config seeds=0: unknown top-level key; the config has: task_name,"),
        (["data=wave"], "bad config model.in_features=2: the data have 1 input features"),
        (  # the rings step their optimizer themselves, 100 steps a batch: Lightning refuses
            ["trainer.accumulate_grad_batches=2"],
            "bad config trainer: Automatic gradient accumulation is not supported for manual",
        ),
        (
            ["+optimizer.betas=[0.9]"],
            "bad config optimizer: torch.optim.Adam refused its arguments",
        ),
    ],
)
def test_values_the_run_cannot_honour_are_refused_with_what_to_do(cli, overrides, expected):
    result = cli("experiment=rings", *overrides)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["experiment=mnist_mlp", "task.misclassified=1000"], "misclassified=1000: expected an"),
        (["experiment=mnist_autoencoder", "task.top_k=500"], "top_k=500: expected an integer <="),
        (
            ["experiment=mnist_autoencoder", "task.top_k=60", "data.train_subset=50"],
            "top_k=60: at most the 45 training images it ranks",
        ),
    ],
)
def test_what_an_image_task_shows_after_training_is_bounded_before_it(
    cli, tiny_mnist, tmp_path, overrides, expected
):
    # a grid of thousands of images took minutes to draw; a search for more neighbours than
    # training images failed in torch.topk, both after the training (a step of which would
    # write last.ckpt)
    data = [f"paths.data_dir={tiny_mnist}", "data.download=false"]
    result = cli(*overrides, *data, "trainer.max_steps=1", "trainer.max_epochs=-1")
    assert result.returncode == 2, result.stderr
    assert f"nnlab: bad config task.{expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.rglob("*.ckpt"))  # nothing trained


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["optimizer.lr=1e300"], "optimizer.lr=1e+300: expected a number < 3.4e+38"),
        (["trainer.precision=64-true"], "trainer.precision='64-true': nnlab's tasks and their"),
        (["trainer.max_epochs=0", "trainer.max_steps=-1"], "trainer.max_epochs=0: 0 epochs"),
        (["task_name=../../escaped"], "task_name='../../escaped': expected a plain folder name"),
        (["experiment=../model/mlp"], "experiment='../model/mlp': name an option of experiment/"),
        (["experiment=null"], "experiment='null': Hydra drops a config group with ~experiment"),
        (["hydra.run.dir=/tmp/elsewhere"], "hydra.run.dir='/tmp/elsewhere': nnlab places every"),
        (["paths.output_dir=/tmp/elsewhere"], "paths.output_dir='/tmp/elsewhere': a run's files"),
        (
            ["callbacks.model_checkpoint.dirpath=/tmp/elsewhere"],
            "callbacks.model_checkpoint.dirpath='/tmp/elsewhere': a run writes only inside its d",
        ),
        (["logger=mlflow", "logger.mlflow.tracking_uri=sqlite:////tmp/x.db"], "logger.mlflow.tra"),
        (["trainer.default_root_dir=/tmp/elsewhere"], "trainer.default_root_dir='/tmp/elsewhere'"),
        (["hydra.output_subdir=../../.."], "hydra.output_subdir='../../..': nnlab places every"),
        (
            ["task_name=${oc.env:NNLAB_UNSET_X}"],
            "hydra.run.dir: Environment variable 'NNLAB_UNSET_X'",
        ),
        (["threads=100000"], "threads=100000: expected at most"),
        (["analyse=maybe"], "analyse='maybe': expected true or false"),
        (["+trainer.gradient_clip_val=nan"], "trainer.gradient_clip_val=nan: expected a finite"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0: 0 batches trains"),
        (["trainer._target_=builtins.print"], "trainer._target_='builtins.print': expected light"),
        (["trainer._target_=nope.Trainer"], "trainer._target_='nope.Trainer': cannot be imported"),
        (  # data= and task= under the default experiment would train under its name and budget
            ["data=wave"],
            "experiment='rings': the default experiment sets its own name, budget and model over "
            "data=wave; add ~experiment to compose them alone",
        ),
        (["logger=[tensorboard,nope]"], "logger='nope': no such option; available: csv, mlflow,"),
        (["model.activation=sïgmoid"], "model.activation='sïgmoid': characters beyond ASCII"),
        (
            ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=0"],
            "hydra.launcher.n_jobs=0: expected a number of parallel",
        ),
        (["-m", "hydra.sweep.dir=/tmp/escaped"], "hydra.sweep.dir='/tmp/escaped': a sweep's dir"),
        (["-m", "hydra.sweep.dir=''"], "hydra.sweep.dir='': a sweep's dir lies inside paths.log"),
    ],
)
def test_values_that_would_fail_late_or_elsewhere_are_refused_first(
    cli, tmp_path, overrides, expected
):
    flags = [o for o in overrides if o.startswith("-")]
    result = cli(*[o for o in overrides if o not in flags], multirun=bool(flags))
    assert result.returncode == 2, result.stderr
    assert f"nnlab: bad config {expected}" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()
    assert not list(tmp_path.rglob("checkpoints"))  # nothing trained


@pytest.mark.parametrize(
    ("override", "hint"),
    [  # an argument that a config does not list, and a typo of a Trainer argument
        (
            "callbacks.model_checkpoint.every_n_epochs=2",
            "(ModelCheckpoint takes it: add it with +callbacks.model_checkpoint."
            "every_n_epochs=...)",
        ),
        ("trainer.gradient_clip_va=1", "(did you mean gradient_clip_val?)"),
    ],
)
def test_a_key_the_target_takes_is_told_how_to_add_it(cli, override, hint):
    result = cli("experiment=rings", override)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    key = override.partition("=")[0]
    parent = key.rpartition(".")[0]
    assert line.startswith(f"nnlab: bad config {key}: unknown key; {parent} has: _target_,")
    assert line.endswith(hint)


def test_every_trainer_argument_is_listed_so_none_needs_a_plus():
    """trainer/default.yaml lists every argument of the Trainer but the three nnlab fills from
    its own groups: this fails when Lightning adds one."""
    import inspect

    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from nnlab.train import CONFIG_DIR

    listed = set(OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml"))
    arguments = set(inspect.signature(pl.Trainer.__init__).parameters) - {"self"}
    assert arguments - {"logger", "callbacks", "plugins"} <= listed
    assert listed - {"_target_"} <= arguments


def test_a_plus_on_a_listed_trainer_argument_says_how_to_set_it(cli):
    result = cli("experiment=rings", "+trainer.accumulate_grad_batches=2")
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "An item is already at 'trainer.accumulate_grad_batches'" in line
    assert line.endswith("'++trainer.accumulate_grad_batches=2'")
    assert "Either remove + prefix: 'trainer.accumulate_grad_batches=2'" in line
