"""`python -m nanogpt VERB ...`"""

import os
import signal


def _stop(signum, frame):
    os._exit(130)  # nothing exists yet; raising into a half-done import could abort the process instead


# Ctrl-C or a scheduler's SIGTERM while the modules load: exit 130 at once
signal.signal(signal.SIGINT, _stop)
signal.signal(signal.SIGTERM, _stop)
from nanogpt.cli import entry  # noqa: E402
entry()
