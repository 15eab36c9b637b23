"""SIGINT and SIGTERM, from the first line of `run` to its last: a run always ends cleanly.

Before a run directory exists, a signal stops the command at once (exit 130; nothing is left
half made: datasets and run dirs are built under temporary names). From the moment the run
directory is created or reopened, a signal is only recorded: the runner sees it at its next
check (every iteration, every few evaluation batches), saves a checkpoint, marks the run
`interrupted` and exits 130. A second Ctrl-C gives up saving and stops at once, still marking
the run `interrupted`.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The handler of SIGINT/SIGTERM for one command, and the first signal it received."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferring = False
        self.announce = True
        """Print a line when a deferred signal arrives (rank 0 does; the other ranks keep quiet)."""
        self._previous: dict[int, Any] = {}

    def install(self) -> StopSignals:
        for signum in SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def defer(self, announce: bool = True) -> None:
        """From now on record signals instead of stopping at once (a run dir is about to exist)."""
        self.deferring = True
        self.announce = announce

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.deferring:
            self.received = signum
            raise KeyboardInterrupt  # SIGTERM too: nothing is saved yet, so stop where we are
        if self.received is None:
            self.received = signum
            if self.announce:
                print(
                    f"\n{signal.Signals(signum).name} received: stopping at the next safe point to save a checkpoint",
                    file=sys.stderr, flush=True,
                )
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop saving, stop now
