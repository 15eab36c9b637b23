"""Runs: the run directory and everything that reads it.

- manifest.py: the run directory and its manifest.json (`RunRecord` owns its keys);
  environment.py: what a run records of the machine (git, packages, CPU, GPU); runlock.py: one
  writer per run directory.
- diff.py: `nanogpt diff`; table.py: `nanogpt runs`; compare.py: `nanogpt compare`; plot.py:
  `nanogpt plot`; sweeps/: `nanogpt sweep`.

May import: config, checkpoints (the catalog a manifest lists), and the foundation; never training
or models: reading a run needs no torch."""

