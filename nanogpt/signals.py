"""SIGINT and SIGTERM, from the first line of `run` to its last: a run always ends cleanly.

Before a run directory exists, a signal ends the command at once, with exit 130: nothing needs
saving, and datasets and run dirs are only ever made under temporary names (what registered
itself with `on_abort`, such as a half-written dataset's temporary files, is removed first).
The process leaves with `os._exit` rather than by raising KeyboardInterrupt into whatever runs:
an exception thrown into an import or into C++ that called back into Python can abort the
process or half-import a module, and then the exit status and the message are wrong.

From the moment the run directory is created or reopened, a signal is only recorded: the runner
sees it at its next check (each iteration, every few evaluation batches), saves a checkpoint,
marks the run `interrupted` and exits 130. A second Ctrl-C gives up saving: the run is marked
`interrupted` (the runner registers that with `on_abort`) and the process exits 130 at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
EXIT_INTERRUPTED = 130

_ON_ABORT: list[Callable[[], None]] = []


@contextlib.contextmanager
def on_abort(cleanup: Callable[[], None]) -> Iterator[None]:
    """Within the block, `cleanup` runs if a signal ends the process at once (see the module)."""
    _ON_ABORT.append(cleanup)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            _ON_ABORT.remove(cleanup)


def abort(message: str) -> None:
    """Run the registered cleanups (newest first), say `message`, and leave with exit 130 now."""
    for cleanup in reversed(list(_ON_ABORT)):
        with contextlib.suppress(BaseException):
            cleanup()
    with contextlib.suppress(BaseException):
        print(message, file=sys.stderr, flush=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


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
        """From now on record signals instead of ending the process (a run dir is about to exist)."""
        self.deferring = True
        self.announce = announce

    def restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def agreed(self, env: Any, iteration: int, every: int) -> bool:
        """Whether a signal asks the job to stop, agreed by every rank at the same iteration.

        Alone, a process looks at its flag each time (free). In a job the ranks agree through a
        small collective (`env.any_rank`), so they only ask every `every` iterations (at the logging
        steps, which sync anyway): one gloo all-reduce per `every` steps, the delay at most `every` steps.
        """
        if not env.distributed:
            return self.received is not None
        if iteration % every:
            return False
        return env.any_rank(self.received is not None)

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if not self.deferring:
            self.received = signum
            abort(f"{name}: interrupted before the run started; nothing was written")
        if self.received is None:
            self.received = signum
            if self.announce:
                print(f"\n{name} received: stopping at the next safe point to save a checkpoint", file=sys.stderr, flush=True)
        elif signum == signal.SIGINT:
            abort(f"{name} again: stopped without saving a checkpoint; the run is marked interrupted")
