"""A device per parallel job: with `hydra.sweeper.devices=[0,1,2,3]` (or, with a GPU trainer,
every GPU torch sees), each of the sweep's worker processes takes its own device, round-robin
when there are more workers than devices (a replaced worker's slot is taken again), and keeps
it for every job it runs. The ids are CUDA_VISIBLE_DEVICES values; without a list, those of the
sweep's own CUDA_VISIBLE_DEVICES, else every GPU torch sees. Only parallel local workers
(joblib, 2 or more jobs at once) get one. A process can
only choose its GPUs before CUDA starts in it, so the choice is the worker's, not the job's:
CUDA_VISIBLE_DEVICES is set before the worker's first job touches CUDA, and Lightning's
`devices: 1` is then that GPU. On SLURM each job is its own allocation, and SLURM sets
CUDA_VISIBLE_DEVICES itself.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nnlab.run.layout import process_alive

DEVICES = "NNLAB_DEVICES"  # set by the sweepers for their jobs: the ids, comma-separated
JOB_DEVICE = "NNLAB_JOB_DEVICE"  # the id this worker took; metrics.json records it
SLOTS = ".devices"  # in the sweep dir: one file per worker that took a device


def sweep_devices(config: object, workers: int) -> list[str]:
    """The device ids the sweep's parallel jobs share: hydra.sweeper.devices, else every GPU
    torch sees when the trainer is a GPU one; none for jobs that run one at a time."""
    listed = config.hydra.sweeper.get("devices")  # type: ignore[attr-defined]
    if workers < 2:
        return []
    if listed is not None:
        return [str(device) for device in listed]
    if str(config.get("trainer", {}).get("accelerator")) not in ("gpu", "cuda"):  # type: ignore[attr-defined]
        return []
    if os.environ.get("CUDA_VISIBLE_DEVICES"):  # the GPUs this process was given (SLURM's)
        return [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
    import torch  # only for a GPU sweep: its seconds of import are the sweep's

    return [str(device) for device in range(torch.cuda.device_count())]


def take_a_device(sweep_dir: Path, devices: Sequence[str]) -> str | None:
    """This worker's device: the one it took for an earlier job, else the next free slot's
    (slot k takes devices[k % len(devices)]), claimed with a file that only one process can
    create."""
    if not devices:
        return None
    if os.environ.get(JOB_DEVICE):
        return os.environ[JOB_DEVICE]
    slots = Path(sweep_dir) / SLOTS
    slots.mkdir(exist_ok=True)
    slot = 0
    while True:
        try:
            with open(slots / str(slot), "x") as claim:
                claim.write(f"{os.getpid()}\n")
            break
        except FileExistsError:
            holder = (slots / str(slot)).read_text().strip()
            if holder.isdigit() and not process_alive(int(holder)):  # a replaced worker's
                (slots / str(slot)).unlink(missing_ok=True)
                continue
            slot += 1
    device = devices[slot % len(devices)]
    os.environ["CUDA_VISIBLE_DEVICES"] = os.environ[JOB_DEVICE] = device
    return device
