"""nnlab-reproduce: claims judged over seeds, a claim that must fail fails, and the report is
complete. The verdicts are tested on run dirs written here (metrics.json, saved predictions):
judging reads only what a sweep leaves. The whole reproduction runs, quick, on real data."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_command

from nnlab.analysis.compare import paired_t_test
from nnlab.analysis.report import summarize
from nnlab.reproduce.claims import claim_files, load_claim
from nnlab.reproduce.command import main as reproduce_main
from nnlab.reproduce.findings import COLUMNS
from nnlab.reproduce.sweeps import Mode, command, plan
from nnlab.train import CONFIG_DIR

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")
VERDICTS = {
    "reproduced",
    "reproduced only under a condition",
    "not reproduced",
    "not checkable here",
    "inconclusive",
    "not measured",
}

RINGS = {
    "notebook": {"section": "Classification", "words": "...", "number": "none"},
    "experiment": "rings",
    "sweep": ["model.hidden_nodes=1,3"],
    "rule": {"test": "threshold", "metric": "test/acc", "threshold": 0.99},
}


def write_claim(folder: Path, name: str, claim: dict, **changes: object) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump({**claim, **changes}))


def write_run(
    sweep_dir: Path, job: int, overrides: list[str], metrics: dict, dataset: str | None = None
) -> Path:
    """A run dir as a sweep leaves it: .hydra/overrides.yaml (config.yaml), metrics.json."""
    run_dir = sweep_dir / f"{job}_{','.join(overrides)}"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"data": {"dataset": dataset}} if dataset else {"data": {}}
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", **metrics}))
    return run_dir


def reproduce(tmp_path: Path, *arguments: str):
    return run_command(reproduce_main, [*arguments, "--out", str(tmp_path / "out")], tmp_path)


def findings(tmp_path: Path) -> dict[str, dict[str, str]]:
    with (tmp_path / "out" / "findings.csv").open() as file:
        return {row["claim"]: row for row in csv.DictReader(file)}


def judged(tmp_path: Path, claims: Path) -> dict[str, dict[str, str]]:
    """Judge the runs under tmp_path/runs by `claims` (no training); the findings by claim."""
    result = reproduce(tmp_path, "--claims", str(claims), "--judge", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    return findings(tmp_path)


def rings_runs(sweep_dir: Path) -> None:
    """Five seeds each: 1 node near the notebook's 0.69, 3 nodes at 1.0 but one seed."""
    job = 0
    for nodes, accuracies in ((1, [0.69, 0.70, 0.68, 0.69, 0.71]), (3, [1.0] * 5)):
        for seed, accuracy in enumerate(accuracies):
            overrides = [f"model.hidden_nodes={nodes}", f"seed={seed}"]
            write_run(sweep_dir, job, overrides, {"test/acc": accuracy})
            job += 1


def test_a_claim_the_runs_contradict_is_not_reproduced(tmp_path):
    claims = tmp_path / "claims"
    false_claim = {"model.hidden_nodes=1": "above"}  # "1 sigmoid node separates the rings"
    true_claim = {"model.hidden_nodes=1": "below", "model.hidden_nodes=3": "above"}
    write_claim(claims, "one_node_separates", RINGS, rule={**RINGS["rule"], "expect": false_claim})
    write_claim(claims, "three_nodes_separate", RINGS, rule={**RINGS["rule"], "expect": true_claim})
    for name in ("one_node_separates", "three_nodes_separate"):
        rings_runs(tmp_path / "runs" / name)

    rows = judged(tmp_path, claims)
    assert rows["one_node_separates"]["verdict"] == "not reproduced"
    assert rows["one_node_separates"]["why"] == (
        "model.hidden_nodes=1: claimed at least 0.99, measured 0.694 [0.6798, 0.7082]"
    )
    assert rows["three_nodes_separate"]["verdict"] == "reproduced"
    assert "5 of 5 seeds reached 0.99" in rows["three_nodes_separate"]["measurement"]
    markdown = (tmp_path / "out" / "findings.md").read_text()
    assert "| [one_node_separates](#one_node_separates) |" in markdown
    assert "**not reproduced**" in markdown
    for name in rows:
        assert (tmp_path / "out" / "figures" / f"{name}.png").read_bytes().startswith(b"\x89PNG")


def test_one_seed_that_fails_makes_a_threshold_claim_inconclusive_not_reproduced(tmp_path):
    claims = tmp_path / "claims"
    write_claim(claims, "three", RINGS, rule={**RINGS["rule"], "expect": {"all": "above"}})
    for seed, accuracy in enumerate([1.0, 1.0, 1.0, 1.0, 0.98]):  # mean 0.996, interval < 0.99
        write_run(tmp_path / "runs" / "three", seed, [f"seed={seed}"], {"test/acc": accuracy})

    row = judged(tmp_path, claims)["three"]
    assert row["verdict"] == "inconclusive"
    assert row["why"] == "all: claimed at least 0.99, measured 0.996 [0.9849, 1.007]"
    assert "4 of 5 seeds reached 0.99" in row["measurement"]


def test_a_paired_claim_that_holds_only_with_more_nodes_says_so(tmp_path):
    claims = tmp_path / "claims"
    wave = {
        "notebook": {"section": "Regression", "words": "...", "number": "none"},
        "experiment": "wave",
        "sweep": ["model.hidden_nodes=10,20"],
        "as_notebook": ["model.hidden_nodes=10"],
        "condition": {"runs": ["model.hidden_nodes=20"], "words": "with 20 hidden nodes"},
        "rule": {"test": "paired", "a": "test/r2_left", "b": "test/r2_right"},
    }
    write_claim(claims, "left_side", wave, rule={**wave["rule"], "expect": {"all": "greater"}})
    write_claim(claims, "right_side", wave, rule={**wave["rule"], "expect": {"all": "less"}})
    left_minus_right = {10: [0.3, -0.2, 0.1, -0.1, 0.05], 20: [0.3, 0.25, 0.35, 0.3, 0.28]}
    for name in ("left_side", "right_side"):
        for nodes, differences in left_minus_right.items():
            for seed, difference in enumerate(differences):
                metrics = {"test/r2_left": 0.6 + difference, "test/r2_right": 0.6}
                overrides = [f"model.hidden_nodes={nodes}", f"seed={seed}"]
                write_run(tmp_path / "runs" / name, nodes + seed, overrides, metrics)

    rows = judged(tmp_path, claims)
    left = rows["left_side"]
    assert left["verdict"] == "reproduced only under a condition"
    assert left["why"] == "with 20 hidden nodes; as in the notebook it is inconclusive"
    # the p-value reported is the deciding setting's (20 nodes), not the notebook's (0.37)
    assert float(left["p_value"]) == pytest.approx(
        paired_t_test([0.3, 0.25, 0.35, 0.3, 0.28]), rel=1e-2
    )
    assert rows["right_side"]["verdict"] == "not reproduced"


def classifier_runs(sweep_dir: Path, wrong: dict[str, list[int]], dataset: str) -> None:
    """Runs of two experiments on 1,000 test images, each seed wrong on its first N images."""
    target = np.arange(1000) % 10
    for job, (experiment, counts) in enumerate(wrong.items()):
        for seed, count in enumerate(counts):
            predicted = target.copy()
            predicted[:count] = (predicted[:count] + 1) % 10
            overrides = [f"experiment={experiment}", f"seed={seed}"]
            metrics = {"test/acc": 1 - count / 1000}
            run_dir = write_run(sweep_dir, 10 * job + seed, overrides, metrics, dataset)
            np.savez(
                run_dir / "test_predictions.npz",
                index=np.arange(1000),
                target=target,
                predicted=predicted,
            )


def test_classifiers_are_compared_by_mcnemar_per_seed_and_a_t_test_over_seeds(tmp_path):
    claims = tmp_path / "claims"
    images = {
        "notebook": {"section": "Image Classification", "words": "...", "number": "6.6 SDs"},
        "experiment": "mnist_mlp,mnist_cnn",
        "data": "mnist",
        "rule": {"test": "classifiers", "metric": "test/acc"},
    }
    mlp, cnn = "experiment=mnist_mlp", "experiment=mnist_cnn"
    write_claim(claims, "cnn_beats_mlp", images, rule={**images["rule"], "a": mlp, "b": cnn})
    write_claim(claims, "mlp_beats_cnn", images, rule={**images["rule"], "a": cnn, "b": mlp})
    value = {"test": "value", "metric": "test/acc", "tolerance": 0.01, "expect": {mlp: 0.944}}
    write_claim(claims, "mlp_accuracy", images, rule=value)
    wrong = {"mnist_mlp": [60, 55, 62, 58, 61], "mnist_cnn": [30, 33, 29, 31, 28]}
    for name in ("cnn_beats_mlp", "mlp_beats_cnn", "mlp_accuracy"):
        classifier_runs(tmp_path / "runs" / name, wrong, "fashion_mnist")

    rows = judged(tmp_path, claims)
    beats = rows["cnn_beats_mlp"]
    assert beats["data"] == "Fashion-MNIST"
    assert beats["verdict"] == "reproduced only under a condition"
    assert "on Fashion-MNIST, not the notebook's MNIST" in beats["why"]
    assert "McNemar p < 0.05 in 5 of 5 seeds" in beats["measurement"]
    # 29 more images right on average, each seed's lead in binomial SDs (about 7.5 images)
    assert (
        "test/acc +0.029 [+0.02324, +0.03476], 3.877 [3.202, 4.552] binomial SDs of 1,000 test"
        in beats["measurement"]
    )
    assert float(beats["p_value"]) < 1e-4
    assert rows["mlp_beats_cnn"]["verdict"] == "not reproduced"
    assert rows["mlp_beats_cnn"]["why"].endswith(
        "on Fashion-MNIST, not the notebook's MNIST (absent here)"
    )
    assert rows["mlp_accuracy"]["verdict"] == "not checkable here"
    assert "MNIST's" in rows["mlp_accuracy"]["why"]


def test_a_bad_claim_file_stops_with_one_line_and_status_2(tmp_path):
    claims = tmp_path / "claims"
    write_claim(claims, "typo", RINGS, rule={**RINGS["rule"], "test": "treshold"})
    result = reproduce(tmp_path, "--claims", str(claims), "--judge", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "nnlab-reproduce: bad config claim typo: rule.test='treshold': expected one of "
        "threshold, paired, classifiers, value"
    ]

    write_claim(claims, "typo", RINGS, seeds=5)  # a key the schema does not have
    result = reproduce(tmp_path, "--claims", str(claims), "--judge", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("nnlab-reproduce: bad config claim typo: seeds=")


@pytest.mark.parametrize(
    ("plan", "says"),
    [  # "/" walked the whole file system; the others were tracebacks
        ('{"claims": {"rings_claim": "/"}}', "names '/' for rings_claim: a sweep is a folder"),
        ('{"claims": {"rings_claim": "../.."}}', "names '../..' for rings_claim: a sweep is a"),
        ('{"claims": {"rings_claim": 5}}', "names 5 for rings_claim"),
        ("[1, 2]", "is not nnlab-reproduce's plan"),
        ('{"claims": []}', "is not nnlab-reproduce's plan"),
        ('{"commands": {"s": 5}}', "gives s no list of overrides"),
        ("{not json", "does not read"),
        (b"\xff\xfe", "does not read"),
    ],
)
def test_a_runs_dir_whose_plan_is_not_one_is_refused_in_one_line(tmp_path, plan, says):
    claims = tmp_path / "claims"
    write_claim(claims, "rings_claim", RINGS, rule={**RINGS["rule"], "expect": {"all": "above"}})
    runs = tmp_path / "runs"
    runs.mkdir()
    path = runs / "plan.json"
    path.write_bytes(plan) if isinstance(plan, bytes) else path.write_text(plan)
    result = reproduce(tmp_path, "--claims", str(claims), "--judge", str(runs))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"nnlab-reproduce: bad config --judge='{runs}': its plan.json ")
    assert says in line


def test_judging_a_folder_that_is_not_there_is_refused(tmp_path):
    result = reproduce(tmp_path, "--judge", str(tmp_path / "nope"))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"nnlab-reproduce: bad config --judge='{tmp_path / 'nope'}': no such folder of runs"
    )
    assert not (tmp_path / "out").exists()  # no findings of nothing measured


@pytest.mark.parametrize("text", ["rule: [unclosed\n", "!!python/object/apply:os.system [ls]\n"])
def test_a_claim_file_that_is_no_yaml_is_refused_in_one_line(tmp_path, text):
    claims = tmp_path / "claims"
    claims.mkdir()
    (claims / "broken.yaml").write_text(text)
    result = reproduce(tmp_path, "--claims", str(claims), "--judge", str(tmp_path))
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("nnlab-reproduce: bad config claim broken=")


def test_every_claim_file_loads_and_the_image_claims_run_on_fashion_mnist_without_mnist():
    claims = [load_claim(path) for path in claim_files(CONFIG_DIR.parent / "claims")]
    assert len(claims) >= 9 and all(claim.budget.seeds >= 5 for claim in claims)
    sweeps = plan(claims, Mode("budget", "fashion_mnist", download=False))
    shared = [sweep for sweep in sweeps if len(sweep.claims) > 1]
    assert [sweep.claims for sweep in shared] == [["autoencoder_mse", "autoencoder_search"]]
    (cnn,) = [sweep for sweep in sweeps if sweep.name == "cnn_beats_mlp"]
    line = command(cnn, Path("/tmp/x"), jobs=2)
    assert line[2:4] == ["nnlab.train", "-m"]
    for override in (
        "experiment=mnist_mlp,mnist_cnn",
        "seed=0,1,2,3,4",
        "++data.dataset=fashion_mnist",
        "++data.download=false",
        "hydra.launcher.n_jobs=2",
        "threads=1",
    ):
        assert override in line
    gpu = plan(claims, Mode("gpu", "mnist", download=True, overrides=("trainer=gpu",)))
    (cnn,) = [sweep for sweep in gpu if sweep.name == "cnn_beats_mlp"]
    assert "++data.dataset=mnist" in cnn.overrides and "trainer=gpu" in cnn.overrides
    assert not any("trainer.max_epochs" in o for o in cnn.overrides)  # the experiments' budgets


def test_summarize_gives_the_mean_and_students_t_interval():
    summary = summarize([1.0, 2.0, 3.0, 4.0, 5.0])
    # sd 1.5811, standard error 0.7071, t(0.975, 4 df) = 2.7764
    assert (summary.mean, summary.n) == (3.0, 5)
    assert summary.low == pytest.approx(3 - 1.9632, abs=1e-4)
    assert summary.high == pytest.approx(3 + 1.9632, abs=1e-4)
    one = summarize([0.7])
    assert one.mean == 0.7 and math.isnan(one.low) and str(one) == "0.7 (1 run, no interval)"
    assert str(summarize([1.0, 1.0])) == "1 [1, 1]"
    assert paired_t_test([0.1, 0.1, 0.1]) == 0.0 and paired_t_test([0.1, 0.1], "less") == 1.0
    assert math.isnan(paired_t_test([0.1]))


@pytest.mark.slow
@pytest.mark.skipif(
    not DEBIAN_FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is not installed"
)
def test_the_quick_reproduction_writes_a_complete_report(tmp_path):
    result = reproduce(tmp_path, "--quick", f"paths.data_dir={tmp_path / 'data'}")

    assert result.returncode == 0, result.stderr
    names = [path.stem for path in claim_files(CONFIG_DIR.parent / "claims")]
    rows = findings(tmp_path)
    assert sorted(rows) == sorted(names)
    for name, row in rows.items():
        assert list(row) == list(COLUMNS)
        assert all(cell.strip() for cell in row.values()), (name, row)
        assert row["verdict"] in VERDICTS, row
        assert row["verdict"] != "not measured", row
        assert (tmp_path / "out" / row["figure"]).read_bytes().startswith(b"\x89PNG")
    claims = {name: load_claim(CONFIG_DIR.parent / "claims" / f"{name}.yaml") for name in names}
    for name, claim in claims.items():
        assert rows[name]["data"] == ("Fashion-MNIST" if claim.data else rows[name]["data"])
        if claim.fixed:
            assert rows[name]["notebook_bug_fixed"] != "none"
    markdown = (tmp_path / "out" / "findings.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| [")]
    assert [line.split("]")[0][3:] for line in table] == names
    assert all(line.count(" | ") == 5 for line in table)  # six cells, none left out
