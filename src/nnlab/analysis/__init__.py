"""Reading runs after the fact: nnlab-report (a sweep's table and picture, intervals over
seeds), nnlab-compare (two classifiers, McNemar's test), and similarity search over codes."""
