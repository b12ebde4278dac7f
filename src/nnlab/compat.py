"""The private names of other libraries that nnlab uses: each because no public API does the
same, and each pinned by tests/test_compat.py, which fails naming it when an upgrade moves it.

tests/test_compat.py also reads every file of src/ and fails on a private name of another
library that is not listed in PRIVATE_NAMES.
"""

from __future__ import annotations

from typing import Any

PRIVATE_NAMES = {
    "_load_combined_loader_states": "Lightning drops a resumed loader's state (issue #20550)",
    "hydra._internal.callbacks": "Hydra's job runner needs its callbacks object (nnlab.api)",
}


def load_pending_loader_states(trainer: Any) -> None:
    """Give the training DataLoaders the state a resumed checkpoint saved for them (their place
    in the epoch). Lightning does it only when it first sets up the training data after
    restoring; a module that reads `trainer.estimated_stepping_batches` in
    `configure_optimizers`, as Lightning's docs suggest for a schedule over the whole budget,
    sets the data up before, and the state is dropped (Lightning issue #20550, open)."""
    trainer.fit_loop._load_combined_loader_states()


def hydra_callbacks(cfg: Any) -> Any:
    """The `hydra.callbacks` of a composed config, as Hydra's own runner calls them: nnlab.api
    runs a job with Hydra's public `run_job`, which needs them and has no public constructor."""
    from hydra._internal.callbacks import Callbacks

    return Callbacks(cfg)
