"""A single run through the real command line: what it prints, and what its run dir holds."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
import yaml
from conftest import is_finite_number, read_metrics, run_command, run_dirs
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from nnlab.run.layout import run_stamp


def test_a_run_writes_its_dir_and_prints_where_it_is(cli, tmp_path):
    result = cli("experiment=rings", "trainer.max_steps=1000", "model.hidden_nodes=4", analyse=True)
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    # <paths.log_dir>/<task_name>/runs/<timestamp>_<random>/
    assert run_dir.parent == tmp_path / "logs" / "rings" / "runs"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{3}_[0-9a-f]{6}", run_dir.name)

    metrics = read_metrics(run_dir)
    assert metrics.pop("status") == "completed"
    assert set(metrics) == {
        f"{stage}/{name}" for stage in ("train", "val", "test") for name in ("loss", "acc")
    }
    assert all(is_finite_number(value) for value in metrics.values())

    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["model"]["hidden_nodes"] == 4
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"best.ckpt", "last.ckpt"}
    log = (run_dir / "train.log").read_text()
    assert log.count("Instantiating") >= 5 and "GPU available" in log  # train.log has it all
    # train.log ends with the result: the status, the run dir, then every metric
    ending = log[log.index("rings: completed in") :]
    assert f"run dir {run_dir}" in ending
    assert re.search(rf"  val/acc +{metrics['val/acc']:.6g}\n", ending)

    # The console: the key settings, the bar, the summary; none of Lightning's notices.
    assert "logs experiment=rings trainer.max_steps=1000 model.hidden_nodes=4\n" in result.stderr
    assert "RingsTask, MLP network of 17 parameters, RingsDataModule, Adam" in result.stderr
    assert "1,000 optimizer steps on CPU with 1 torch thread(s)" in result.stderr
    for noise in ("Instantiating", "GPU available", "TPU", "FLOPs", "Trainer.fit` stopped"):
        assert noise not in result.stderr + result.stdout

    # The summary: final metrics, the run dir, and how to open TensorBoard on it.
    assert f"{metrics['val/acc']:.4f}" in result.stdout
    assert f"Run dir:     {run_dir}" in result.stdout
    assert f"tensorboard --logdir {run_dir}" in result.stdout


def test_tensorboard_holds_metrics_per_optimizer_step_figures_and_hparams(cli, tmp_path):
    result = cli(
        "experiment=rings", "trainer.max_steps=1000", "model.activation=tanh", analyse=True
    )
    assert result.returncode == 0, result.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"} <= scalars
    # x-axis: optimizer steps (100 per full batch), not Lightning's batch count
    assert [event.step for event in events.Scalars("train/loss")] == list(range(100, 1001, 100))
    assert events.Scalars("val/acc")[-1].step == 1000
    assert {"figures/decision_boundary", "figures/hidden_lines"} <= set(events.Tags()["images"])

    start = _hparams_session_start(events)
    assert start.hparams["model.activation"].string_value == "tanh"
    assert start.hparams["model.hidden_nodes"].number_value == 3
    assert start.hparams["optimizer.class"].string_value == "Adam"
    assert start.hparams["optimizer.lr"].number_value == 1e-3
    # The command's own keys lead the columns (TensorBoard ticks the first ones)
    columns = [info.name for info in _hparams(events, "experiment").hparam_infos]
    assert columns[:3] == ["experiment", "trainer.max_steps", "model.activation"]


def _hparams_session_start(events: EventAccumulator) -> plugin_data_pb2.SessionStartInfo:
    return _hparams(events, "session_start_info")


def _hparams(events: EventAccumulator, field: str) -> object:
    for content in events.PluginTagToContent("hparams").values():
        data = plugin_data_pb2.HParamsPluginData.FromString(content)
        if data.HasField(field):
            return getattr(data, field)
    raise AssertionError(f"no hparams {field} in the event files")


def test_run_stamps_differ_within_the_same_second_and_sort_in_start_order():
    stamps = []
    for _ in range(50):
        stamps.append(run_stamp())
        time.sleep(0.002)
    assert len(set(stamps)) == 50
    assert sorted(stamps) == stamps


IMPORTS_AFTER = """
import sys
import time
from nnlab.train import main
sys.argv = ["nnlab-train", *sys.argv[1:]]
status = 0
try:
    main()
except SystemExit as exit:
    status = exit.code
print("exit", status, "torch" in sys.modules, "lightning" in sys.modules, file=sys.stderr)
"""


def test_a_run_name_is_one_dir_that_a_new_run_never_reuses(cli, tmp_path):
    first = cli("experiment=rings", "trainer.max_steps=100", "paths.run_name=mine")
    assert first.returncode == 0, first.stderr
    (run_dir,) = run_dirs(tmp_path / "logs")
    assert run_dir.name == "mine"
    again = cli("experiment=rings", "trainer.max_steps=100", "paths.run_name=mine")
    assert again.returncode == 2
    said = f"bad config paths.run_name='mine': {run_dir} exists: resume it with ckpt_path="
    assert said in again.stderr
    for bad in ("..", "a/b", "x" * 121):
        refused = cli("experiment=rings", f"paths.run_name={bad}")
        assert refused.returncode == 2 and "bad config paths.run_name=" in refused.stderr
    assert run_dirs(tmp_path / "logs") == [run_dir]


def test_several_nodes_started_by_hand_need_a_run_name(cli, monkeypatch):
    monkeypatch.setenv("NODE_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    result = cli("experiment=rings", "trainer=ddp_cpu", "trainer.num_nodes=2")
    assert result.returncode == 2
    assert "bad config trainer.num_nodes=2: each node started by hand names its run dir" in (
        result.stderr
    )


def test_the_command_line_answers_before_importing_torch_or_lightning(tmp_path):
    # Speed is measured in benchmarks/cli.py; here, what makes it fast: nothing heavy loaded.
    cases = [
        (
            ["--cfg", "job", "experiment=rings", "model.hidden_nodes=7"],
            "exit 0",
            "hidden_nodes: 7",
        ),
        (["experiment=rings", "trainer.max_steps=-5"], "exit 2", "trainer.max_steps=-5: expected"),
        (["experiment=rings", "seed=4294967296"], "exit 2", "seed=4294967296: expected an integer"),
    ]
    for arguments, status, shown in cases:
        command = [sys.executable, "-c", IMPORTS_AFTER, *arguments, f"paths.log_dir={tmp_path}"]
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
        assert f"{status} False False" in result.stderr, result.stderr
        assert shown in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("flags", "override", "says"),
    [
        (["--help"], "modle.x=1", "bad config modle: unknown key; the config has: "),
        (["--cfg", "job"], "experiment=nope", "bad config experiment='nope': no such option"),
        (["--cfg", "job"], "model.hidden_nodes=[1", "cannot parse it: no viable alternative"),
        (["--help"], "model.hidden_nodes=[1", "cannot parse it: no viable alternative"),
    ],
)
def test_help_or_cfg_with_a_bad_override_is_one_line_and_exit_2(tmp_path, flags, override, says):
    from nnlab.train import main

    result = run_command(main, [*flags, override], tmp_path)
    assert result.returncode == 2
    assert says in result.stderr and result.stderr.count("nnlab: ") == 1
    assert "Traceback" not in result.stderr


def test_help_lists_the_groups_of_the_search_path(tmp_path):
    """Hydra's list of groups reads the search path before the command line's."""
    from nnlab.train import main

    conf = tmp_path / "my_conf"
    for group, option in [("experiment", "mine"), ("experiment", "other"), ("data/sub", "x")]:
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{option}.yaml").write_text("# @package _global_\n")
    result = run_command(main, ["--help", f"hydra.searchpath=[file://{conf}]"], tmp_path)
    assert result.returncode == 0, result.stderr
    listed = result.stdout.split("On hydra.searchpath:\n")[1].split("\n\n")[0]
    assert listed.splitlines() == ["data/sub: x", "experiment: mine, other"]
    assert "experiment: fashion_cnn, " in result.stdout  # nnlab's own, as before
    plain = run_command(main, ["--help"], tmp_path)
    assert "On hydra.searchpath" not in plain.stdout


def test_help_into_a_closed_pipe_ends_quietly(tmp_path):
    """`nnlab-train --help | head`: the reader may go before the help is written (here it
    never reads), and Python's BrokenPipeError was a traceback."""
    command = f"{sys.executable} -m nnlab.train --help | true"
    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.stderr == ""
    assert result.returncode == 141  # 128 + SIGPIPE, as a shell tool ends


def test_every_run_composes_its_config_exactly_once(cli, tmp_path, monkeypatch):
    """Counted at Hydra's public ConfigLoader.load_configuration, which the command line and
    the compose API both go through: a resume, a start from weights, the Python API and a
    refused key each compose the run's config once. (Hydra's main also composes once in
    MULTIRUN mode, to read `hydra.mode` before it chooses to run or sweep: not counted.)"""
    from hydra.core.config_loader import ConfigLoader
    from hydra.types import RunMode

    from nnlab.api import train

    composes = []
    for loader in ConfigLoader.__subclasses__():  # Hydra's implementation of the interface
        load = loader.load_configuration

        def counted(self, config_name, overrides, run_mode, *args, _load=load, **kwargs):
            if run_mode == RunMode.RUN:
                composes.append(overrides)
            return _load(self, config_name, overrides, run_mode, *args, **kwargs)

        monkeypatch.setattr(loader, "load_configuration", counted)

    rings = ["experiment=rings", "trainer.max_steps=200", "logger=none"]
    assert cli(*rings).returncode == 0
    (run_dir,) = run_dirs(tmp_path / "logs")
    (run_dir / "metrics.json").write_text('{"status": "interrupted"}')  # as a stopped run's
    composes.clear()
    commands = [
        ["experiment=rings", "ckpt_path=last"],
        [*rings, f"init_from={run_dir}"],
        ["experiment=rings", "model.width=3"],
    ]
    for overrides in commands:
        result = cli(*overrides)
        assert result.returncode == (2 if "model.width=3" in overrides else 0), result.stderr
        assert len(composes) == 1, (overrides, composes)
        composes.clear()
    train([*rings, f"paths.log_dir={tmp_path / 'api'}"])
    assert len(composes) == 1


def test_lightnings_warnings_reach_the_console_and_train_log_once_in_every_run(cli, tmp_path):
    """Python printed them on stderr only, with a source path, and only in a process's first
    run (a notebook's second train() had none)."""
    said = (
        "You passed `Trainer(accelerator='cpu', precision='16-mixed')` but AMP with fp16 is "
        "not supported on CPU. Using `precision='bf16-mixed'` instead."
    )
    overrides = ["experiment=rings", "trainer.max_steps=100", "trainer.precision=16-mixed"]
    for _ in range(2):  # the second run in this process says it again
        result = cli(*overrides, "logger=none")
        assert result.returncode == 0, result.stderr
        assert result.stderr.splitlines().count(f"warning: {said}") == 1
        assert "accelerator_connector.py" not in result.stderr  # no source path
        newest = run_dirs(tmp_path / "logs")[-1]
        assert (newest / "train.log").read_text().count(said) == 1
    assert len(run_dirs(tmp_path / "logs")) == 2
