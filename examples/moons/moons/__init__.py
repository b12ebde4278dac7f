"""The two-moons example: a user's own Lightning code, run through nnlab (see README.md)."""
