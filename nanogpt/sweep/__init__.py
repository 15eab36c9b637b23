"""`nanogpt sweep`: a family of runs from one spec, launched, recorded, stopped and resumed as a whole.

- nanogpt.spec.sweep: axes and the `[sweep]` table expanded into members (torch-free, pure).
- record: the sweep dir and its sweep.json, updated under a lock by any number of processes.
- launch: the members as `nanogpt run` processes, N at a time, signals forwarded.
- command: the verb itself: plan, validate every member, then list, dry-run or launch.
"""
