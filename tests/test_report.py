"""nnlab-report on a real sweep, including a job that failed."""

from __future__ import annotations

import csv
import json

import pytest

from nnlab.analysis.report import default_axes, read_runs, varying_keys
from nnlab.analysis.report import main as report_main


def test_report_tabulates_a_sweep_and_plots_its_metric(cli, tmp_path):
    result = cli(
        "experiment=rings",
        "trainer.max_steps=200",
        "model.hidden_nodes=1,3,-1",  # -1 is a bad value: that job fails, the others complete
        "seed=0,1",
        multirun=True,
    )
    assert result.returncode != 0  # Hydra reports the failed jobs once the sweep is done
    (sweep_dir,) = (tmp_path / "logs" / "rings" / "multiruns").iterdir()

    report_main([str(sweep_dir)])

    rows = list(csv.DictReader((sweep_dir / "report.csv").open()))
    assert len(rows) == 6
    assert {"model.hidden_nodes", "seed", "status", "val/acc", "test/loss"} <= set(rows[0])
    assert "experiment" not in rows[0]  # the same in every run, so not a column
    failed = [row for row in rows if row["status"] != "completed"]
    assert [row["model.hidden_nodes"] for row in failed] == ["-1", "-1"]
    assert "model.hidden_nodes=-1: expected a positive integer" in failed[0]["status"]
    assert all(float(row["val/acc"]) > 0 for row in rows if row["status"] == "completed")

    markdown = (sweep_dir / "report.md").read_text()
    assert "6 runs, 4 completed, 2 not." in markdown
    assert "![report](report.png)" in markdown
    assert (sweep_dir / "report.png").read_bytes().startswith(b"\x89PNG")


def test_report_names_what_it_cannot_find(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        report_main([str(tmp_path)])
    assert stop.value.code == 2
    assert "nnlab-report: no run dirs" in capsys.readouterr().err


def test_a_folder_of_single_runs_with_keys_some_lack_is_reported(cli, tmp_path):
    # Runs made one by one: each overrides other keys, and one failed before any metric.
    for overrides in (
        ["model.hidden_nodes=2"],
        ["model.activation=relu"],
        ["model.hidden_nodes=0"],
    ):
        cli("experiment=rings", "trainer.max_steps=100", "logger=none", *overrides)
    runs = tmp_path / "logs" / "rings" / "runs"
    for x in ("model.hidden_nodes", "model.activation"):
        report_main([str(runs), "--x", x])
        rows = list(csv.DictReader((runs / "report.csv").open()))
        assert [row["model.hidden_nodes"] for row in rows] == ["2", "", "0"]
        assert [row["model.activation"] for row in rows] == ["", "relu", ""]
        assert rows[2]["val/acc"] == "" and rows[2]["status"].startswith("failed: bad config")
        assert (runs / "report.png").read_bytes().startswith(b"\x89PNG")


def test_run_dirs_whose_files_do_not_read_are_listed_as_such(tmp_path, capsys):
    # A run dir's files are data: a truncated metrics.json or a hand-edited overrides.yaml
    # shows in the table; it stops neither the report nor the other runs.
    for name, overrides, metrics in (
        ("good", "- model.hidden_nodes=2\n", '{"status": "completed", "val/acc": 0.9}'),
        ("cut", "- model.hidden_nodes=3\n", '{"status": "compl'),
        ("edited", "- model.hidden_nodes=[\n", '{"status": "completed", "val/acc": 0.8}'),
    ):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(overrides)
        (tmp_path / name / "metrics.json").write_text(metrics)
    report_main([str(tmp_path)])
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "report.csv").open())}
    assert rows["cut"]["status"] == "metrics.json does not read as JSON"
    assert rows["good"]["val/acc"] == "0.9" and rows["edited"]["val/acc"] == "0.8"
    assert rows["edited"]["model.hidden_nodes"] == ""
    assert "edited: cannot parse it: no viable alternative" in capsys.readouterr().err


def test_run_dir_files_that_never_end_or_nest_deep_end_the_report_cleanly(tmp_path, capsys):
    """A FIFO hung the report, /dev/zero filled the memory, and JSON nested 100,000 deep was
    a RecursionError."""
    import os

    for name in ("fifo", "zero", "deep", "good"):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
        (tmp_path / name / "metrics.json").write_text('{"status": "completed", "val/acc": 1}')
    (tmp_path / "fifo" / ".hydra" / "overrides.yaml").unlink()
    os.mkfifo(tmp_path / "fifo" / ".hydra" / "overrides.yaml")
    (tmp_path / "zero" / ".hydra" / "overrides.yaml").unlink()
    (tmp_path / "zero" / ".hydra" / "overrides.yaml").symlink_to("/dev/zero")
    (tmp_path / "deep" / "metrics.json").write_text("[" * 100_000)
    report_main([str(tmp_path)])
    rows = {row["run"]: row for row in csv.DictReader((tmp_path / "report.csv").open())}
    assert rows["deep"]["status"] == "metrics.json does not read as JSON"
    assert rows["good"]["status"] == rows["fifo"]["status"] == rows["zero"]["status"] == "completed"
    said = capsys.readouterr().err
    assert "fifo: its .hydra/overrides.yaml does not read (FileNotFoundError)" in said


def test_the_default_metric_is_the_validation_metric_a_module_logs(tmp_path):
    for hidden, loss in ((4, 0.4), (8, 0.3)):
        (tmp_path / f"h{hidden}" / ".hydra").mkdir(parents=True)
        (tmp_path / f"h{hidden}" / ".hydra" / "overrides.yaml").write_text(
            f"- task.hidden={hidden}\n"
        )
        metrics = {"status": "completed", "train_loss": 0.5, "val_loss": loss}
        (tmp_path / f"h{hidden}" / "metrics.json").write_text(json.dumps(metrics))
    runs = read_runs(tmp_path)
    assert default_axes(runs, varying_keys(runs), None, None, None)[:2] == (
        "val_loss",
        "task.hidden",
    )


def test_a_sweep_over_per_layer_widths_is_tabulated_and_plotted(tmp_path):
    for name, widths, accuracy in (("a", "[4,4]", 0.9), ("b", "[3,2]", 0.8)):
        (tmp_path / name / ".hydra").mkdir(parents=True)
        overrides = f"- model.hidden_nodes={widths}\n"
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(overrides)
        metrics = {"status": "completed", "val/acc": accuracy}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    report_main([str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    assert [row["model.hidden_nodes"] for row in rows] == ["[4, 4]", "[3, 2]"]
    assert (tmp_path / "report.png").read_bytes().startswith(b"\x89PNG")
