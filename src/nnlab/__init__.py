"""nnlab: an introductory deep-learning notebook's experiments as a Lightning + Hydra template.

Importing nnlab imports neither torch nor Lightning: the command line answers and checks its
arguments first. `nnlab.api` is the Python entry point (train, load_run).
"""

import os

# Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1 when it is imported; nnlab.runtime undoes that
# unless the user had set the variable before (see restore_nvml_check).
USER_NVML_CHECK = os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK")
