"""nnlab: an introductory deep-learning notebook's experiments as a Lightning + Hydra template.

Importing nnlab imports neither torch nor Lightning: the command line answers and checks its
arguments first. `nnlab.api` is the Python entry point (train, load_run).
"""

import os
from pathlib import Path

# Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, so that torch.cuda.is_available()
# does not initialise CUDA before a fork. On a CUDA build of torch without a GPU, NVML then
# fails and is re-opened at every call, and Adam asks at every step: 0.42 -> 0.58 ms a step on
# the rings. nnlab never forks after using CUDA (sweeps and DDP start new processes), so a run
# removes the variable (nnlab.train.build_run) unless the user set it: the environment the
# process started with tells (Linux's /proc), whether Lightning was imported before nnlab or
# after; elsewhere, the environment as nnlab is imported.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
try:
    _STARTED_WITH = Path("/proc/self/environ").read_bytes().split(b"\0")
    USER_SET_NVML_CHECK = any(e.startswith(f"{NVML_CHECK}=".encode()) for e in _STARTED_WITH)
except OSError:
    USER_SET_NVML_CHECK = NVML_CHECK in os.environ
