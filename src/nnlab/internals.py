"""The private attributes of Lightning, torch and Hydra that nnlab uses, in one place.

Each is used because no public API does the same (the comment says why). A Lightning, torch
or Hydra upgrade that moves one makes tests/test_internals.py fail, naming it.
"""

from __future__ import annotations

from typing import Any


def count_optimizer_step(trainer: Any) -> None:
    """Count an optimizer step that Lightning did not take itself, as its own optimizer loop
    would: `global_step`, `max_steps` and checkpoints all read this counter. Used by the
    opt-in several-steps-per-batch path (nnlab.tasks.steps_per_batch)."""
    progress = trainer.fit_loop.epoch_loop.automatic_optimization.optim_progress.optimizer.step
    progress.increment_ready()
    progress.increment_completed()


def file_writer(summary_writer: Any) -> Any:
    """A torch SummaryWriter's event file writer, to add raw summaries (the HPARAMS entry)
    without the scalars at step 0 that Lightning's `log_hyperparams` would add."""
    return summary_writer._get_file_writer()


def hydra_callbacks(cfg: Any) -> Any:
    """The `hydra.callbacks` of a composed config, as Hydra's own runner calls them: the
    Python API runs a job with Hydra's `run_job`, which needs them."""
    from hydra._internal.callbacks import Callbacks

    return Callbacks(cfg)


def hydra_argument_parser() -> Any:
    """The argparse parser of Hydra's command line (`--cfg job`, `-m`, the overrides): nnlab
    reads a command line as Hydra will, flags with values included."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser()


def hydra_grid(overrides: list[Any], max_batch_size: int | None) -> list[list[list[str]]]:
    """Every combination of the swept values, in batches of jobs, as Hydra's BasicSweeper makes
    them (glob, choice, range...): a static method of a class among Hydra's internal plugins."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(overrides, max_batch_size)


def job_error(result: Any) -> BaseException | None:
    """The exception a failed Hydra job raised: JobReturn keeps it in `_return_value`, and its
    public `return_value` re-raises it (printing "Error executing job" first)."""
    from hydra.core.utils import JobStatus

    return getattr(result, "_return_value", None) if result.status == JobStatus.FAILED else None


def optuna_trial_id(trial: Any) -> int:
    """The storage's id of an Optuna trial (its number is per study), which the heartbeat of
    a trial run outside `study.optimize` needs: Optuna has no public accessor."""
    return trial._trial_id


def load_pending_loader_states(trainer: Any) -> None:
    """Give the training DataLoaders the state a resumed checkpoint saved for them (their place
    in the epoch). Lightning does it only when it first sets up the training data after
    restoring; a module that reads `trainer.estimated_stepping_batches` in
    `configure_optimizers`, as Lightning's docs suggest for a schedule over the whole budget,
    sets the data up before, and the state is dropped (Lightning issue #20550, open)."""
    trainer.fit_loop._load_combined_loader_states()


def set_update_count(metric: Any, count: int) -> None:
    """Set how many batches a torchmetrics metric has seen, as when its running sums are put
    back from a checkpoint: with a count of 0, `compute` warns that it was never updated."""
    metric._update_count = count


# Hooks Lightning calls on each callback at every training or evaluation batch; it ignores
# their results, and skips a hook attribute that is not callable (trainer/call.py).
TRAIN_BATCH_HOOKS = (
    "on_train_batch_start",
    "on_train_batch_end",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
)
EVAL_BATCH_HOOKS = (
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_test_batch_start",
    "on_test_batch_end",
)


def skip_unused_batch_hooks(trainer: Any) -> None:
    """Set to None the per-batch hooks of the trainer's callbacks that do nothing: those a
    callback's class inherits unchanged (empty methods), and the train-batch hook of a
    ModelCheckpoint that saves only at validations or epoch ends (no `every_n_train_steps`, no
    `train_time_interval`). Lightning then skips them rather than calling each inside its
    profiler's context. With nnlab's six default callbacks and the MNIST MLP task, five of
    these hooks took 74 us a batch, and 12 after: 3% of a step at batch 256. A hook set on the
    instance itself is kept; the module's hooks are left alone (code may call them).
    """
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    for callback in trainer.callbacks:
        for hook in TRAIN_BATCH_HOOKS + EVAL_BATCH_HOOKS:
            if hook not in vars(callback) and getattr(type(callback), hook) is getattr(
                L.Callback, hook
            ):
                setattr(callback, hook, None)
        if (
            isinstance(callback, ModelCheckpoint)
            and "on_train_batch_end" not in vars(callback)
            and type(callback).on_train_batch_end is ModelCheckpoint.on_train_batch_end
            and callback._every_n_train_steps < 1
            and callback._train_time_interval is None
        ):
            callback.on_train_batch_end = None
