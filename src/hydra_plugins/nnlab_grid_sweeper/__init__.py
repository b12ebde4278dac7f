"""nnlab's grid sweeper for Hydra (hydra/sweeper=nnlab_grid, the default); see nnlab.sweeps."""
