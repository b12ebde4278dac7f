"""nnlab: an introductory deep-learning notebook's experiments as a Lightning + Hydra template.

Importing nnlab imports neither torch nor Lightning: the command line answers and checks its
arguments first. `nnlab.api` is the Python entry point (train, load_run).
"""

import os
from pathlib import Path

NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def _in_starting_environment(name: str) -> bool | None:
    """Whether `name` was set when this process started (Linux's /proc); None where unknown."""
    try:
        entries = Path("/proc/self/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return any(entry.startswith(f"{name}=".encode()) for entry in entries)


# Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, and nnlab.runtime undoes that unless
# the user set it. The environment the process started with tells which, whether Lightning was
# imported before nnlab or after; elsewhere than Linux, the environment as nnlab is imported.
_STARTED_WITH = _in_starting_environment(NVML_CHECK)
USER_SET_NVML_CHECK = NVML_CHECK in os.environ if _STARTED_WITH is None else _STARTED_WITH
