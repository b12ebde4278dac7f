"""nnlab's Optuna sweeper for Hydra (hydra/sweeper=nnlab_optuna); see nnlab.hparams_search."""
