"""The tests' pre-emption: SIGTERM this process after a given optimizer step, as a cluster
would, so that nnlab's own handler stops the run there (in-process, no new interpreter)."""

from __future__ import annotations

import os
import signal

import lightning as L


class SigtermAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)
