"""Figures: functions that take arrays and return matplotlib Figures, nothing else."""
