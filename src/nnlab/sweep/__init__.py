"""Sweeps and searches: Hydra's sweep syntax, Hydra's launchers, an Optuna study; what nnlab
adds is that each stops whole on a signal and reports every job (hydra/sweeper=nnlab_grid,
nnlab_optuna; their Hydra shims are in src/hydra_plugins/)."""
