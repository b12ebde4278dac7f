"""Reading runs after the fact: nnlab-report (a sweep's table and picture, intervals over
seeds) and nnlab-compare (two classifiers, McNemar's test)."""
