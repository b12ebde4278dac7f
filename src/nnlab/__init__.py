"""nnlab: an introductory deep-learning notebook's experiments as a Lightning + Hydra template."""

import os

_nvml_check = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")

import lightning  # noqa: E402, F401  (imported here so the fix below runs before any training code)

# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 so that torch.cuda.is_available() does not
# initialise CUDA before a fork. On a CUDA build of torch without a GPU, NVML then fails and is
# re-opened on every call, and Adam asks on every step: 0.42 -> 0.58 ms per step on the rings
# task. nnlab never forks after using CUDA (its sweeps spawn fresh processes and DDP launches
# subprocesses), so it restores the user's own setting. Set the variable yourself to keep it.
if _nvml_check is None:
    os.environ.pop("PYTORCH_NVML_BASED_CUDA_CHECK", None)
