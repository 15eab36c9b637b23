"""Checkpoints: what one holds, the two formats it is written in, and which of a run's to trust.

- state.py: the record itself (`training_state`, `FORMAT`) and its way back into a model and an
  optimizer (`restore_training_state`); `load_checkpoint` reads either format.
- files.py: a `.pt` file, written atomically off the loop's thread (`CheckpointWriter`) and read
  with `weights_only=True`.
- sharded.py: under fsdp, a DCP directory every process writes its shards of; its pickled
  metadata read by an unpickler that admits only DCP's record types.
- catalog.py: a run's checkpoints as its manifest lists them: best or latest, verified against
  their sha256 before a resume, pruned to the last few and the best.

May import: nanogpt.errors and nanogpt.fileio, torch; nothing about models, data or runs (a
checkpoint is plain state: the model kind that rebuilds it is in the record it holds)."""

