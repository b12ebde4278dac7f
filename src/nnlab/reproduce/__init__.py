"""`nnlab-reproduce`: the notebook's claims, each run as a sweep over seeds and judged.

claims.py    the claim files (claims/*.yaml), read and checked
sweeps.py    each claim's `nnlab-train -m` command, and running it
judge.py     the verdict of each claim's rule, from nnlab.report's and nnlab.compare's statistics
findings.py  findings.md, findings.csv and a figure per claim
command.py   the command line
"""
