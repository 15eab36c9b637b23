"""`nanogpt sweep`: a family of runs from one spec, launched, recorded, stopped and resumed as a whole.

- nanogpt.config.sweep: axes and the `[sweep]` table expanded into members (torch-free, pure).
- record.py: the sweep dir and its sweep.json, updated under a lock by any number of processes.
- launch.py: the members as `nanogpt run` processes, N at a time, signals forwarded.
- command.py: the verb itself: plan, validate every member, then list, dry-run or launch.

May import what nanogpt.runs may: members are separate `nanogpt run` processes, never imported."""

