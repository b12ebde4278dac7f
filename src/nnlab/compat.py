"""What nnlab relies on that other libraries do not promise: the private names it uses (each
because no public API does the same) and one behaviour. tests/test_compat.py pins each, failing
with its name when an upgrade moves it, and reads every file of src/ for a private name of
another library that PRIVATE_NAMES does not list.
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


PER_STEP_HOOKS = (
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_start",
    "on_train_batch_end",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
)


def skip_empty_hooks(callbacks: list[Any]) -> None:
    """Set to None the per-step hooks that a callback inherits unchanged from Lightning's
    Callback (they do nothing): Lightning calls a callback's hook only if it is callable, and
    calls each other one inside its profiler's context, naming the callback by its state key.
    With nnlab's six default callbacks and the full-batch tasks' 100 steps a batch, the empty
    ones took 40 us a step, 9% of the rings' training loop (make bench: 1.47x -> 1.33x). A hook
    a callback's class defines, or that an instance sets on itself, is kept."""
    import lightning as L

    for callback in callbacks:
        for hook in PER_STEP_HOOKS:
            if hook not in vars(callback) and getattr(type(callback), hook) is getattr(
                L.Callback, hook
            ):
                setattr(callback, hook, None)


def hydra_callbacks(cfg: Any) -> Any:
    """The `hydra.callbacks` of a composed config, as Hydra's own runner calls them: nnlab.api
    runs a job with Hydra's public `run_job`, which needs them and has no public constructor."""
    from hydra._internal.callbacks import Callbacks

    return Callbacks(cfg)
