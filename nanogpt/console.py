"""A training run outlives its console: output to a closed pipe is dropped, never fatal.

`nanogpt run SPEC | head -3` closes stdout after three lines. Python then raises BrokenPipeError
on the next print, and again when it flushes at exit. The run's record is on disk (manifest,
metrics.jsonl, TensorBoard), so the console is a convenience: once a stream's reader is gone,
its file descriptor is pointed at /dev/null and the run goes on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO


class _Survives:
    """A text stream that, once its pipe is closed, sends what is written to /dev/null."""

    def __init__(self, stream: TextIO):
        self._stream = stream
        self.closed_pipe = False

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as e:
            self._lost(e)
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as e:
            self._lost(e)

    def _lost(self, e: OSError) -> None:
        if not isinstance(e, BrokenPipeError) and e.errno not in (errno.EPIPE, errno.EIO):
            raise e
        self.closed_pipe = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)
        try:
            self._stream.flush()  # what was buffered goes to /dev/null now
        except OSError:
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def survive_closed_console() -> Iterator[None]:
    """Within the block, sys.stdout and sys.stderr survive a closed pipe (see the module)."""
    wrapped = {}
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None or isinstance(stream, _Survives):
            continue
        try:
            stream.fileno()
        except (OSError, AttributeError, ValueError):
            continue  # not a real file (pytest's capture): nothing to protect
        wrapped[name] = stream
        setattr(sys, name, _Survives(stream))
    try:
        yield
    finally:
        for name, stream in wrapped.items():
            setattr(sys, name, stream)
