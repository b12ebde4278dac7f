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


# The hooks Lightning calls at every optimizer step (the first four) or batch.
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


def skip_empty_hooks(callbacks: list[Any], module: Any) -> None:
    """Set to None the per-step hooks that a callback inherits unchanged from Lightning's
    Callback, and the module's backward, optimizer-step and zero-grad hooks that it inherits
    unchanged from LightningModule: they do nothing. Lightning calls a hook only if it is
    callable, and calls each other one inside its profiler's context, with the module's current
    hook name set around it: under manual optimization, three of each at every step. With
    nnlab's seven default callbacks and the full-batch tasks' 100 steps a batch, the callbacks'
    empty hooks took the rings' training loop from 1.47x to 1.33x, the module's from 1.36x to
    1.29x (make bench's loop, 5 interleaved repeats). A hook that a class defines, or that an
    instance sets on itself, is kept. (The module's batch hooks stay: Lightning reads their
    signatures.)"""
    import lightning as L

    owners = [(callback, L.Callback, PER_STEP_HOOKS) for callback in callbacks]
    for owner, base, hooks in [*owners, (module, L.LightningModule, PER_STEP_HOOKS[:4])]:
        for hook in hooks:
            if hook not in vars(owner) and getattr(type(owner), hook) is getattr(base, hook):
                setattr(owner, hook, None)


def hydra_callbacks(cfg: Any) -> Any:
    """The `hydra.callbacks` of a composed config, as Hydra's own runner calls them: nnlab.api
    runs a job with Hydra's public `run_job`, which needs them and has no public constructor."""
    from hydra._internal.callbacks import Callbacks

    return Callbacks(cfg)
