"""`python -m nanogpt.run SPEC [key=value ...]`: the short form of `nanogpt run`, a command line only.

Also what torchrun launches: `torchrun --standalone --nproc_per_node=8 -m nanogpt.run SPEC`. The
runner it starts is nanogpt/training/runner.py (`run()`), the loop nanogpt/training/loop.py; nothing imports this
module, which does nothing on import.
"""

import os
import signal
import sys


def _stop(signum, frame):
    os._exit(130)  # nothing exists yet; raising into a half-done import could abort the process instead


if __name__ == "__main__":
    # Ctrl-C or a scheduler's SIGTERM while the modules load: exit 130 at once
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    from nanogpt.cli import entry  # noqa: E402
    entry(["run", *sys.argv[1:]])
