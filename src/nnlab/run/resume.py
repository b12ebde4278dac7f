"""Resuming a run in place, and reading checkpoints without running what they contain.

`ckpt_path=last` (or a run dir, or a checkpoint in one) resumes an unfinished run. Hydra has
already composed the command, once, in that run's own dir (nnlab.run.layout places it there).
What the run's own command set and this one does not is then replayed onto the config as
data: a value is set as it was; a config group's option must be the one this command chose
(there is no second compose to apply another: the message says what to add); and code named
in the run dir (a `_target_`) is never replayed, only typed.

A checkpoint is a pickle, and unpickling can run any code: every checkpoint nnlab reads goes
through torch's weights-only loader, and Lightning's own loading is asked for weights-only.
"""

from __future__ import annotations

import functools
import io
import logging
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nnlab.checks import NO_VALUE
from nnlab.errors import ConfigError
from nnlab.overrides import command_overrides, key_of, parse, value_of, values
from nnlab.run import layout

NOT_REPLAYED = ("ckpt_path", "hydra.", "hydra/", "paths.output_dir")  # where the run is
log = logging.getLogger("nnlab")


def replay(cfg: DictConfig, run_dir: Path) -> None:
    """Set in `cfg` what the run's own command set and this command does not."""
    this = {key_of(o) for o in command_overrides()}
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    for override in parse(layout.saved_overrides(run_dir, "ckpt_path"), "ckpt_path"):
        key, value = key_of(override.input_line), value_of(override)
        if key in this or key.startswith(NOT_REPLAYED):
            continue
        if key.rpartition(".")[2] == "_target_" or _targets(value):
            reason = "code named in a run dir is never run: type it on the command line to resume"
            raise ConfigError(key, value, reason)
        if key in choices:
            if _text(choices[key]) != _text(value):
                _replay_option(cfg, run_dir, key, _text(value), _text(choices[key]))
            continue
        try:
            if override.is_delete():
                parent, _, name = key.rpartition(".")
                with open_dict(cfg):
                    (OmegaConf.select(cfg, parent) if parent else cfg).pop(name, None)
            else:
                adds = override.is_add() or override.is_force_add()
                OmegaConf.update(cfg, key, value, merge=True, force_add=adds)
        except OmegaConfBaseException as error:
            reason = f"the run set it, and this config cannot ({str(error).splitlines()[0]})"
            raise ConfigError(key, value, reason) from None


def _replay_option(cfg: DictConfig, run_dir: Path, group: str, option: str, chosen: str) -> None:
    """The run's own node of a config group whose option differs from the one this command
    composed (`logger=none`), from its saved config: data, whose every `_target_` must be one
    that a config of that group names (in nnlab's conf/ or a folder on the search path)."""
    if group not in cfg or "/" in group:  # a global option (experiment=, debug=): not one node
        reason = f"the run was started with {group}={option}: add it to resume the run"
        raise ConfigError(group, chosen, reason)
    saved = layout.saved_file(run_dir, "config.yaml", "ckpt_path")
    node = OmegaConf.create(saved.get(group) if isinstance(saved, dict) else None)
    allowed = set()
    for source in HydraConfig.get().runtime.config_sources:
        if source.schema == "file":
            for file in Path(source.path, group).glob("*.yaml"):
                allowed |= _targets(yaml.safe_load(file.read_text()))
    for target in sorted(_targets(OmegaConf.to_container(node))):
        if target not in allowed:
            reason = f"the run's {group}={option} names code no config of {group}/ names"
            raise ConfigError(f"{group}._target_", target, reason)
    with open_dict(cfg):
        cfg[group] = node


def recomposed(run_dir: Path, typed: list[str]) -> DictConfig:
    """The run's config composed again, once, from the configs on disk with the run's own
    overrides. A run dir is data, and nothing it names is built: its overrides may set values
    and choose options, and name code (a `_target_`) or a `hydra.searchpath` only where the
    user typed the same override (`typed`, joining the compose); its saved config must name
    the same code as this compose, or it was changed after the run (or the configs were).
    Refused, in one line, otherwise."""
    from hydra import compose, initialize_config_dir

    from nnlab.errors import raised_as_known
    from nnlab.train import CONFIG_DIR

    overrides = layout.saved_overrides(run_dir, "run_dir")
    saved = layout.saved_file(run_dir, "config.yaml", "run_dir")
    hydra = layout.saved_file(run_dir, "hydra.yaml", "run_dir")
    try:
        its_searchpath = [o for o in hydra["hydra"]["overrides"]["hydra"] if "searchpath" in o]
    except (TypeError, KeyError) as error:
        reason = f"its .hydra/hydra.yaml is not Hydra's ({type(error).__name__})"
        raise ConfigError("run_dir", str(run_dir), reason) from None
    if its_searchpath and not any(key_of(o) == "hydra.searchpath" for o in typed):
        reason = f"the run composed with {its_searchpath[-1]}: type it too (nnlab follows no "
        reason += "search path that a run dir names)"
        raise ConfigError("hydra.searchpath", NO_VALUE, reason)
    for override in parse(overrides, "run_dir"):
        line = override.input_line
        if line not in typed and (
            key_of(line).endswith("_target_") or _targets(value_of(override))
        ):
            reason = f"its overrides name code ({line}): type it too (nnlab runs no code that a "
            raise ConfigError("run_dir", str(run_dir), reason + "run dir names)")
    wanted = [_plus_plus(o) for o in overrides if not key_of(o).startswith(NOT_REPLAYED)]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"), raised_as_known():
        cfg = compose("train", [*wanted, *(o for o in typed if o not in wanted)])
    check_same_code(cfg, run_dir, saved)
    return cfg


def _plus_plus(override: str) -> str:
    """`+trainer.x=1` as `++trainer.x=1`: a run made before trainer/ listed every Trainer
    argument added them with +, which Hydra now refuses on a listed key."""
    key = override.partition("=")[0]
    return (
        f"+{override}"
        if key.startswith("+") and not key.startswith("++") and "." in key
        else override
    )


def check_same_code(
    cfg: DictConfig, run_dir: Path, saved: Any = None, key: str = "run_dir"
) -> None:
    """Each `_target_` the run dir's saved config names is the one `cfg` names at that place
    (`cfg` composed from configs on disk), but in a node this command changes (a resume says
    why that cannot resume): a run dir whose config names other code was changed after the
    run, or planted, and is refused rather than read further."""
    config = run_dir / layout.HYDRA_DIR / "config.yaml"
    if saved is None and config.exists():  # without one, a resume has nothing to compare
        saved = layout.saved_file(run_dir, "config.yaml", key)
    composed = _target_paths(OmegaConf.to_container(cfg))
    chosen = {key_of(o).partition(".")[0] for o in command_overrides()}  # this command's doing
    for path, target in sorted(_target_paths(saved).items()):
        if composed.get(path) != target and path.partition(".")[0] not in chosen:
            reason = (
                f"its config names {target} at {path}, where the run's overrides compose "
                f"{composed.get(path)}: changed since the run; nnlab runs no code a run dir names"
            )
            raise ConfigError(key, str(run_dir), reason)


def _mappings(node: Any, path: str = "") -> Iterator[tuple[str, dict]]:
    """Every mapping in a plain config tree, with its dotted path ("" for the root)."""
    if isinstance(node, dict):
        yield path, node
    if isinstance(node, dict | list):
        for name, value in node.items() if isinstance(node, dict) else enumerate(node):
            yield from _mappings(value, f"{path}.{name}" if path else str(name))


def _target_paths(node: Any) -> dict[str, str]:
    """`{"data._target_": "nnlab.data...", ...}`: every `_target_` in a plain config tree."""
    return {
        f"{path}._target_".lstrip("."): str(mapping["_target_"])
        for path, mapping in _mappings(node)
        if "_target_" in mapping
    }


def _targets(node: Any) -> set[str]:
    """Every `_target_` named in a plain config tree."""
    return set(_target_paths(node).values())


def _text(value: Any) -> str:
    return str(OmegaConf.to_container(value) if isinstance(value, ListConfig) else value)


def check_resumable(task: Any, cfg: DictConfig, checkpoint: Path) -> int:
    """The step of `checkpoint`, once its weights are found to fit `task`, the module this
    command built; else ConfigError naming the setting this command changed."""
    import torch

    saved = read(checkpoint, "ckpt_path", mapped=True)
    difference = weights_difference(weights(task, saved), weights(task))
    if difference:
        raise refusal(cfg, difference)
    for name, _ in task.named_parameters():  # a run resumed at its last step trains no more
        tensor = saved["state_dict"].get(name)  # (buffers may hold inf on purpose: a mask)
        if tensor is not None and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            reason = f"its {name} holds NaN or inf: nothing to resume from (the run diverged)"
            raise ConfigError("ckpt_path", str(checkpoint), reason)
    return int(saved.get("global_step", 0))


def refusal(cfg: DictConfig, reason: str) -> ConfigError:
    """Why the run cannot resume with this command's config, under the first setting the
    command changed from the run's own (the likely cause), else under ckpt_path."""
    left = "the run is left as it was: resume it with its own settings, or start a new run from "
    left += "its weights with init_from="
    original = values(layout.saved_overrides(Path(cfg.paths.output_dir), "ckpt_path"))
    changed = {
        key: value
        for key, value in values(command_overrides()).items()
        if not key.startswith((*NOT_REPLAYED, "paths.")) and original.get(key, object()) != value
    }
    if not changed:
        return ConfigError("ckpt_path", str(cfg.ckpt_path), f"{reason}; {left}")
    key = min(changed, key=lambda key: key not in original)  # a changed value before a new key
    had = f"the run had {key}={original[key]}" if key in original else "the run did not set it"
    return ConfigError(key, changed[key], f"{had}; {reason}; {left}")


def read(path: Path | str, key: str, mapped: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, read weights-only; ConfigError under `key` if it cannot be.

    `mapped`: the tensors map the file instead of being read, which is enough to check their
    shapes (for a 500 MB checkpoint: 3 ms instead of 0.3 to 0.7 s).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file: nothing to load")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
        except RuntimeError as error:  # torch maps only its zip format, not the legacy one
            if not mapped or "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused = _unsafe_globals(path)
        if not refused:  # not torch's file, or not whole
            reason = f"not a readable checkpoint: truncated or corrupt ({type(error).__name__})"
            raise ConfigError(key, str(path), reason) from None
        raise ConfigError(
            key,
            str(path),
            f"refused: it holds Python objects beyond weights (it names {named(refused)}, "
            "which loading could run); nnlab reads checkpoints weights-only",
        ) from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            key, str(path), f"not a readable checkpoint: truncated or corrupt ({reason})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(key, str(path), "not a Lightning checkpoint (no state_dict)")
    step = checkpoint.get("global_step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        reason = f"not a Lightning checkpoint: its global_step is {step!r}"
        raise ConfigError(key, str(path), reason)
    return checkpoint


def named(names: list[str], shown: int = 3) -> str:
    """`a, b, c and 4 more`: the first few of `names`, sorted, once each."""
    names = sorted(set(names))
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def _unsafe_globals(path: Path) -> list[str]:
    """What a checkpoint names that torch's weights-only loader refuses (its zip format)."""
    import torch

    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # the legacy format, or not a checkpoint
        return []


def weights_file(value: str, key: str, default: str = "best") -> Path:
    """The checkpoint file `value` names: a .ckpt file, or a run dir (its `default` checkpoint,
    else its last.ckpt)."""
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        return path
    if not layout.is_run_dir(path):
        raise ConfigError(key, value, "a folder, but not an nnlab run dir (no .hydra/)")
    chosen = layout.checkpoint(path, default)
    return chosen if chosen.is_file() else layout.checkpoint(path, "last")


def load_weights(module: Any, path: Path | str, key: str) -> None:
    """Copy the checkpoint's weights into `module`, exactly: every tensor must exist in both
    with the same shape, or ConfigError names the first that does not. The running sums of
    the module's metrics are not weights: a run started from them begins its epochs anew."""
    own, saved = weights(module), weights(module, read(path, key))
    difference = weights_difference(saved, own)
    if difference:
        raise ConfigError(key, str(path), difference)
    module.load_state_dict(saved, strict=False)


def weights(module: Any, checkpoint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The module's state, or the checkpoint's, without the module's torchmetrics' running
    sums: they are not weights (a training run keeps them in its checkpoints, ResumeState)."""
    from torchmetrics import Metric

    metrics = tuple(f"{n}." for n, m in module.named_modules() if isinstance(m, Metric) and n)
    state = module.state_dict() if checkpoint is None else checkpoint["state_dict"]
    return {k: v for k, v in state.items() if not k.startswith(metrics)}


def weights_difference(saved: dict[str, Any], own: dict[str, Any]) -> str | None:
    """How the checkpoint's tensors `saved` differ from a module's `own` (the first tensor
    missing or shaped otherwise), or None when the weights fit."""
    import torch

    for name, tensor in own.items():
        if name not in saved:
            return f"the checkpoint has no {name}: another network"
        if not isinstance(saved[name], torch.Tensor):  # a metric's list state may be a list
            return f"the checkpoint's {name} is {type(saved[name]).__name__}, not a tensor"
        if tuple(getattr(saved[name], "shape", ())) != tuple(tensor.shape):
            return (
                f"layer {name} is {tuple(saved[name].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} here; the network's config differs from the run's"
            )
    extra = sorted(set(saved) - set(own))
    return f"the checkpoint has {extra[0]}, which this network lacks" if extra else None


def allow_partials(cfg: DictConfig) -> None:
    """Let torch's weights-only loader, in this process, rebuild a functools.partial of a
    callable that the run's own `_partial_: true` nodes name, and nothing else: nnlab's
    checkpoints keep them as configs (`as_saved`), but not one written before that, or by a
    ModelCheckpoint with save_weights_only (Lightning skips the callbacks' hooks there).
    Rebuilding one calls nothing; the module's own code calls it, when it trains."""
    import torch

    from nnlab.run.build import locate

    callables: list[Any] = [functools.partial]
    for _, node in _mappings(OmegaConf.to_container(cfg.get("task") or {}, resolve=False)):
        if node.get("_partial_") is not True or "_target_" not in node:
            continue
        try:
            callables.append(locate(str(node["_target_"]), "task"))
        except ConfigError:  # building the task names it
            continue
    torch.serialization.add_safe_globals(callables)


def as_saved(value: Any) -> Any:
    """A hyperparameter as nnlab's checkpoints keep it: plain data, which a weights-only load
    reads in any interpreter. A functools.partial (lightning-hydra-template's optimizer and
    scheduler, which Hydra hands over as a subclass of its own) becomes its config, a
    `_target_` node that `hydra.utils.instantiate` turns back into the same partial; config
    nodes become plain lists and dicts."""
    from omegaconf import Container

    if isinstance(value, functools.partial):
        func = value.func
        node: dict[str, Any] = {"_target_": f"{func.__module__}.{func.__qualname__}"}
        node["_partial_"] = True
        if value.args:
            node["_args_"] = [as_saved(arg) for arg in value.args]
        return node | {key: as_saved(arg) for key, arg in value.keywords.items()}
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {key: as_saved(item) for key, item in value.items()}
    if isinstance(value, list):
        return [as_saved(item) for item in value]
    if isinstance(value, tuple):  # a namedtuple too, as a plain tuple
        return tuple(as_saved(item) for item in value)
    return value


def save_hparams_as_data(checkpoint: dict[str, Any]) -> None:
    """The module's and the data module's hyperparameters in `checkpoint`, as `as_saved` keeps
    them (a callback's on_save_checkpoint: the objects themselves are left as they are)."""
    import lightning as L

    for key in (
        L.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY,
        L.LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY,
    ):
        if isinstance(checkpoint.get(key), dict):
            checkpoint[key] = {name: as_saved(value) for name, value in checkpoint[key].items()}


def keep_checkpoints_loadable(*objects: Any) -> None:
    """Anything in the hyperparameters that a weights-only load refuses even as nnlab saves
    them (`as_saved`) is said, in one line, now, rather than when a resume needs the checkpoint.
    Hydra's own subclass of functools.partial, which only a save that skips the callbacks'
    hooks (`save_weights_only`) would keep, becomes the plain partial it stands for, and
    config nodes plain lists and dicts."""
    import torch
    from omegaconf import Container

    for obj in objects:
        hparams = getattr(obj, "hparams", None) or {}
        for name, value in list(hparams.items()):  # as the objects, for weights-only saves
            if isinstance(value, functools.partial) and type(value) is not functools.partial:
                hparams[name] = functools.partial(value.func, *value.args, **value.keywords)
            elif isinstance(value, Container):
                hparams[name] = OmegaConf.to_container(value, resolve=True)
        buffer = io.BytesIO()
        torch.save({name: as_saved(value) for name, value in hparams.items()}, buffer)
        buffer.seek(0)
        refused = torch.serialization.get_unsafe_globals_in_checkpoint(buffer)  # not allowed
        if refused:
            log.warning(
                "%s's save_hyperparameters() keeps %s, which a weights-only load refuses: "
                "resuming, nnlab-eval and load_run will refuse its checkpoints (pass it as "
                "config, or add it to save_hyperparameters(ignore=[...]))",
                type(obj).__name__,
                named(refused),
            )
