"""Performance and planning: how fast a spec trains, how big it is, and whether it fits.

- bench.py: `nanogpt bench`: the runner's own training step, timed (ms/iter, tokens/s, MFU).
- scaling.py: `nanogpt scaling params|flops|optimal|loss|memory`; laws.py: Chinchilla's loss fit
  and compute-optimal sizes (the seed's scaling notebook); memory.py: bytes per process under ddp
  and fsdp (`scaling memory`, and `check`'s fit warning).

May import: every layer below it; scaling.py, laws.py and memory.py import no torch (`check`
reads memory.py)."""

