"""The Hydra plugin shim: Hydra only instantiates sweepers found in the hydra_plugins package.

(No `from __future__ import annotations` here: OmegaConf reads this dataclass's annotations
as types, and Hydra imports plugin modules in a way that postponed annotations cannot resolve.)
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional  # noqa: UP035 (OmegaConf wants typing's forms)

from hydra.core.config_store import ConfigStore

from nnlab.sweep.grid import GridSweeper


@dataclass
class GridSweeperConf:
    _target_: str = "hydra_plugins.nnlab_grid_sweeper.sweeper.NnlabGridSweeper"
    params: Optional[Dict[str, str]] = field(default=None)  # noqa: UP006, UP045
    # a device per parallel job (nnlab/sweep/devices.py): ids; null: every GPU of a GPU trainer
    devices: Optional[List[Any]] = None  # noqa: UP006, UP045


class NnlabGridSweeper(GridSweeper):
    pass


ConfigStore.instance().store(
    group="hydra/sweeper", name="nnlab_grid", node=GridSweeperConf, provider="nnlab"
)
