"""A property of the whole validation path, hunted with drawn values: whatever value a user
gives any key of any experiment's config, nnlab ends cleanly (exit 0, 2, or 3 for a run that
diverged), never with a traceback; and a value of the wrong kind for a number is refused.

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
