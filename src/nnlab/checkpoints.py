"""Reading checkpoints without running what they contain, and loading their weights.

A checkpoint is a pickle, and unpickling can run any code. Every checkpoint nnlab reads goes
through torch's weights-only loader (tensors, numbers, strings and plain containers only):
the checks before resuming, `init_from=`, nnlab-eval and `load_run`; Lightning's own loading
when it resumes is asked for weights-only too. A file that holds more is refused, unread.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from nnlab import layout
from nnlab.errors import ConfigError


def read(path: Path | str, key: str, mapped: bool = False) -> dict[str, Any]:
    """The checkpoint at `path`, read weights-only; ConfigError under `key` if it cannot be.

    `mapped`: the tensors map the file instead of being read into memory, which is enough to
    check their shapes. Resuming checks the checkpoint twice before Lightning loads it; for a
    500 MB checkpoint each check took 0.3 to 0.7 s read, and 3 ms mapped.
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise ConfigError(key, str(path), "no such checkpoint file")
    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mapped)
        except RuntimeError as error:  # torch maps only its zip format, not the legacy one
            if not mapped or "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        what = f"it names {named[1]}, " if named else ""
        raise ConfigError(
            key,
            str(path),
            f"refused: it holds Python objects beyond weights ({what}which loading could run); "
            "nnlab reads checkpoints weights-only",
        ) from None
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ConfigError(
            key, str(path), f"not a readable checkpoint: truncated or corrupt ({reason})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ConfigError(key, str(path), "not a Lightning checkpoint (no state_dict)")
    return checkpoint


def locate(value: str, key: str, default: str = "best") -> Path:
    """The checkpoint file `value` names: a .ckpt file, or a run dir (its `default` checkpoint,
    else its last.ckpt)."""
    path = Path(str(value)).expanduser()
    if path.is_dir():
        if not layout.is_run_dir(path):
            raise ConfigError(key, value, "a folder, but not an nnlab run dir (no .hydra/)")
        chosen = layout.checkpoint(path, default)
        return chosen if chosen.is_file() else layout.checkpoint(path, "last")
    return path


def load_weights(module: Any, path: Path | str, key: str) -> dict[str, Any]:
    """Copy the checkpoint's weights into `module`, exactly: every tensor must exist in both
    with the same shape, or ConfigError names the first that does not. Returns the checkpoint."""
    checkpoint = read(path, key)
    difference = weights_difference(checkpoint["state_dict"], module.state_dict())
    if difference:
        raise ConfigError(key, str(path), difference)
    module.load_state_dict(checkpoint["state_dict"])
    return checkpoint


def weights_difference(saved: dict[str, Any], own: dict[str, Any]) -> str | None:
    """How the checkpoint's tensors `saved` differ from a module's `own` (the first tensor
    missing or shaped otherwise), or None when the weights fit."""
    for name, tensor in own.items():
        if name not in saved:
            return f"the checkpoint has no {name}: another network"
        if tuple(saved[name].shape) != tuple(tensor.shape):
            return (
                f"layer {name} is {tuple(saved[name].shape)} in the checkpoint but "
                f"{tuple(tensor.shape)} here; the network's config differs from the run's"
            )
    extra = sorted(set(saved) - set(own))
    return f"the checkpoint has {extra[0]}, which this network lacks" if extra else None
