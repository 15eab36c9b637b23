"""`python -m nanogpt.run SPEC [key=value ...]`: the short form of `nanogpt run`.

Also what torchrun launches: `torchrun --standalone --nproc_per_node=8 -m nanogpt.run SPEC`.
"""

import signal
import sys


def _stop(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    # a scheduler's SIGTERM while the modules load ends the command as Ctrl-C does: exit 130
    signal.signal(signal.SIGTERM, _stop)
    try:
        from nanogpt.cli import entry
    except KeyboardInterrupt:
        sys.exit(130)
    entry(["run", *sys.argv[1:]])
