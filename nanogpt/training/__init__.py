"""Training: a validated spec built into its components and trained.

- runner.py: `run()`: claim the run dir, build each component from its own table, record, train;
  loop.py: `Trainer`, evaluation, logging, checkpoints, signals; step.py: `TrainStep`, one
  optimizer step (micro-batches, autocast, clipping) and the loss estimate.
- optimizers.py, schedules.py: the registry's optimizer and schedule builders (Muon with AdamW as one optimizer).
- dist.py: the process's place in a torchrun job, its device and precision; parallel.py:
  `system.parallel` (DDP, or FSDP2 sharding); hardware.py: the peak FLOP/s behind MFU;
  tracking.py: metrics.jsonl, the console's progress lines, TensorBoard; trackers.py: `logging.trackers`
  (TensorBoard, Weights & Biases, MLflow), each kept from ever stopping a run; sync.py: `sync`, a run
  replayed into a tracker after the fact.
- downstream.py: `[evaluation]`, the multiple-choice tasks a run scores while it trains.

May import: runs (the manifest it writes), models, data, checkpoints, config, registry and the
foundation; never the verbs above it."""

