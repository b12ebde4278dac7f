"""Properties of the whole validation path, hunted with drawn values: whatever value a user
gives any key of any experiment's config, nnlab ends cleanly (exit 0, 2, or 3 for a run that
diverged), never with a traceback; and a value of the wrong kind for a number is refused.
Whatever a file of a run dir holds (its config, overrides, metrics.json, checkpoints: drawn
bytes, hostile YAML, hostile pickles, a folder, a link out), its readers (nnlab-eval, a
resume, nnlab-report, load_run) end with exit 0 or 2, run nothing, write nothing outside the
run dir, and a refusal leaves the run's files as they were.

Each example runs the real command in this process under `debug=fdr` (one training step, one
validation and one test batch), so that exit 0 means the run really completed. The example
budget is small for `make test`; NNLAB_PROPERTY_EXAMPLES=300 hunts longer, and
`--hypothesis-show-statistics` shows how many examples ended with each exit status.
"""

from __future__ import annotations

import functools
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from conftest import read_metrics, run_command, run_dirs
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from nnlab.overrides import quoted
from nnlab.train import CONFIG_DIR, main

EXPERIMENTS = sorted(path.stem for path in (CONFIG_DIR / "experiment").glob("*.yaml"))
# Where a run is and what it is called take any text; a target names code, not a value.
FREE_KEYS = ("task_name", "tags", "paths.", "hydra.", "logger.", "callbacks.", "ckpt_path")
EXAMPLES = int(os.environ.get("NNLAB_PROPERTY_EXAMPLES", "8"))
CLEAN_EXITS = (0, 2, 3)  # completed, refused, diverged: each one line, no traceback


@functools.cache
def settable_keys(experiment: str) -> dict[str, Any]:
    """Every leaf of the experiment's composed config a user could set, with its value."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"])
    leaves: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{path}.")
            elif not path.startswith(FREE_KEYS) and not path.endswith("_target_"):
                leaves[path] = value

    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return leaves


TEXT_OR_CONTAINERS = ("abc", "'12abc'", "{a: 1}", "[1, x]", "''", "'sïgmoid'")
NOT_A_NUMBER = st.sampled_from(TEXT_OR_CONTAINERS)
ANY_VALUE = st.one_of(
    NOT_A_NUMBER,
    st.sampled_from(["null", "0", "-1", "1e300", "-1e300", "nan", "inf", "true", "2.5"]),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12).map(quoted),
    st.just(quoted("x" * 5000)),
)


@st.composite
def bad_overrides(draw: st.DrawFn) -> tuple[str, str, Any, str]:
    experiment = draw(st.sampled_from(EXPERIMENTS))
    keys = settable_keys(experiment)
    key = draw(st.sampled_from(sorted(keys)))
    current = keys[key]
    is_number = isinstance(current, int | float) and not isinstance(current, bool)
    value = draw(st.one_of(NOT_A_NUMBER, ANY_VALUE) if is_number else ANY_VALUE)
    return experiment, key, current, value


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("NNLAB_PROPERTY_EXAMPLES") is None,  # the same examples in CI
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(drawn=bad_overrides())
def test_any_value_of_any_key_ends_cleanly(tiny_mnist, drawn):
    experiment, key, current, value = drawn
    with tempfile.TemporaryDirectory() as folder:
        logs = Path(folder) / "logs"
        arguments = [
            f"experiment={experiment}",
            "debug=fdr",
            "logger=none",
            f"paths.log_dir={logs}",
            f"paths.data_dir={tiny_mnist}",
            *(["data.download=false"] if "data.download" in settable_keys(experiment) else []),
            f"{key}={value}",
        ]
        result = run_command(main, arguments, Path(folder))
        event(f"exit {result.returncode}")  # pytest --hypothesis-show-statistics counts them
        said = f"{key}={value[:60]}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert result.returncode in CLEAN_EXITS, said
        assert "Traceback" not in result.stderr, said
        if result.returncode == 2:
            assert result.stderr.count("nnlab: ") == 1, said
        if result.returncode == 0:
            (run_dir,) = run_dirs(logs)
            metrics = read_metrics(run_dir)
            assert metrics.pop("status") == "completed", said
            assert all(math.isfinite(v) for v in metrics.values() if isinstance(v, float)), said
        is_number = isinstance(current, int | float) and not isinstance(current, bool)
        if is_number and value in TEXT_OR_CONTAINERS:
            assert result.returncode == 2, said  # text or a container where a number goes


# A run dir is data: whatever a file in it holds, a reader ends cleanly and runs nothing.
RUN_DIR_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    ".hydra/hydra.yaml",
    "metrics.json",
    "checkpoints/last.ckpt",
    "checkpoints/best.ckpt",
)
MARK = "payload_ran"  # a hostile file that got to run creates it, in the example's folder


def checkpoint_bytes(content: object) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


class Payload:
    """Unpickled, it creates the mark: code a checkpoint could run."""

    def __reduce__(self):
        return (Path.touch, (Path(MARK).absolute(),))


FILE_CONTENTS = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=48).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"[]",
            b"{}",
            b"null",
            b"- 1\n- 2\n",
            b"\xff\xfe\x00not utf-8",
            b'{"status": "interrupted"}',
            b"[1, 2]",
            b'{"status": 12, "val/acc": "x"}',
            f"!!python/object/apply:pathlib.Path.touch [{MARK}]\n".encode(),
            f"data: {{_target_: pathlib.Path.touch, self: {MARK}}}\n".encode(),
            f"- '+data.x={{_target_: pathlib.Path.touch, self: {MARK}}}'\n".encode(),
            b"- experiment=nope\n",
            b"- model.hidden_nodes=[1\n",
        ]
    ),
    st.sampled_from(
        [
            {"state_dict": {"network.x": "abc"}, "global_step": 1},
            {"state_dict": {"network.hidden.0.weight": "abc"}, "global_step": 1},
            {"state_dict": {}, "global_step": "ten"},
            {"state_dict": [1, 2]},
            {"global_step": 3},
            [1, 2, 3],
            {"state_dict": {}, "payload": Payload()},
        ]
    ).map(checkpoint_bytes),
    st.sampled_from(["missing", "a directory", "a link out"]),
)
READERS = ("nnlab-eval", "ckpt_path=", "nnlab-report", "load_run")


@functools.cache
def stopped_run() -> Path:
    """An interrupted rings run (so that a resume goes ahead when nothing is wrong)."""
    import json

    from nnlab.api import train

    logs = Path(tempfile.mkdtemp(prefix="nnlab-property-"))
    run = train(
        ["experiment=rings", "trainer.max_steps=100", "logger=none", f"paths.log_dir={logs}"]
    )
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    (run.run_dir / "metrics.json").write_text(json.dumps(metrics | {"status": "interrupted"}))
    return run.run_dir


def spoil(path: Path, content: bytes | str, outside: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
    if content == "a directory":
        path.mkdir()
    elif content == "a link out":
        path.symlink_to(outside)
    elif content != "missing":
        path.write_bytes(content)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=os.environ.get("NNLAB_PROPERTY_EXAMPLES") is None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(RUN_DIR_FILES),
    content=FILE_CONTENTS,
    reader=st.sampled_from(READERS),
)
def test_any_file_of_a_run_dir_ends_its_readers_cleanly(name, content, reader):
    import shutil

    from nnlab.analysis.report import main as report_main
    from nnlab.api import load_run
    from nnlab.errors import RunStopped
    from nnlab.run.eval import main as eval_main

    with tempfile.TemporaryDirectory() as folder:
        run_dir = Path(folder) / "logs" / "rings" / "runs" / stopped_run().name
        shutil.copytree(stopped_run(), run_dir)
        outside = Path(folder) / "outside.txt"
        outside.write_text("untouched\n")
        spoil(run_dir / name, content, outside)
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
        if reader == "load_run":
            try:
                load_run(run_dir, "last")
                status = 0
            except RunStopped as error:  # what the API raises for bad input: the message
                status = error.exit_code
        else:
            command, arguments = {
                "nnlab-eval": (eval_main, [f"run_dir={run_dir}"]),
                "ckpt_path=": (main, ["experiment=rings", f"ckpt_path={run_dir}", "logger=none"]),
                "nnlab-report": (report_main, [str(run_dir.parent)]),
            }[reader]
            result = run_command(command, arguments, Path(folder))
            status = result.returncode
            said = f"{reader} on {name} = {content!r:.80}: exit {status}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, said
            if status == 2:
                lines = result.stderr.splitlines()
                assert len([line for line in lines if "nnlab" in line[:20]]) == 1, said
        event(f"{reader}: exit {status}")
        assert status in (0, 2), f"{reader} on {name} = {content!r:.80}: exit {status}"
        assert not (Path(folder) / MARK).exists() and not Path(MARK).exists()
        assert outside.read_text() == "untouched\n"  # nothing written through a link
        if status == 2 and reader != "nnlab-report":  # refused: the run's files as they were
            after = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
            changed = [p for p in before if after.get(p) != before[p] and p.name != "train.log"]
            assert not changed, f"{reader} on {name}: changed {changed}"
