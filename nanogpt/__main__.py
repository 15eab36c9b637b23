"""`python -m nanogpt VERB ...`"""

import signal
import sys


def _stop(signum, frame):
    raise KeyboardInterrupt


# a scheduler's SIGTERM while the modules load ends the command as Ctrl-C does: exit 130
signal.signal(signal.SIGTERM, _stop)
try:
    from nanogpt.cli import entry
except KeyboardInterrupt:
    sys.exit(130)
entry()
