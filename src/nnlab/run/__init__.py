"""One run, from its composed config to its record: checks, building, callbacks, resuming and
what a run writes. nnlab/train.py reads them in order; nothing here imports a task."""
