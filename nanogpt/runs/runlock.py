"""One writer per run directory: an exclusive `flock` on `<run_dir>/.lock`, held for the life of a run.

The kernel drops the lock when its holder dies (SIGKILL, a crash, a lost node), so a killed run
never leaves a stale lock: the next `run --resume` takes it over at once. The lock file also says
who holds it (PID, host, since when), so a refused second writer can name the holder.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError

LOCK = ".lock"


class RunLocked(InputError):
    """Another live process is writing this run directory."""


class RunLock:
    """An exclusive lock on one run directory; `release()` (or process exit) gives it up."""

    def __init__(self, directory: Path, fd: int):
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: str | os.PathLike[str]) -> RunLock:
        """Take the run's lock now, or raise RunLocked naming the process that holds it."""
        lock = cls.try_acquire(directory)
        if lock is None:
            raise RunLocked(
                f"run {str(directory)!r} is being written by another process ({describe_holder(directory)}); "
                "one process at a time may write a run directory: wait for it to end, or stop it first"
            )
        return lock

    @classmethod
    def try_acquire(cls, directory: str | os.PathLike[str]) -> RunLock | None:
        """The run's lock, or None when a live process holds it."""
        import fcntl

        directory = Path(directory)
        fd = os.open(directory / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        holder = {"pid": os.getpid(), "host": socket.gethostname()}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        return cls(directory, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def is_held(directory: str | os.PathLike[str]) -> bool:
    """Whether a live process holds the run's lock (a run dir without a lock file is free)."""
    if not (Path(directory) / LOCK).exists():
        return False
    lock = RunLock.try_acquire(directory)
    if lock is None:
        return True
    lock.release()
    return False


def describe_holder(directory: str | os.PathLike[str]) -> str:
    """"PID 123 on host-a", from the lock file, as well as it can be read."""
    try:
        holder = json.loads((Path(directory) / LOCK).read_text(encoding="utf-8"))
        return f"PID {int(holder['pid'])} on {str(holder['host'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that did not say who it is"
