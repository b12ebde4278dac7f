"""Tasks: LightningModules that give a network its loss, metrics, logging and figures."""
