"""Errors meant for users: the CLI prints their message (never a traceback) and exits with their code."""

from __future__ import annotations

import errno


class NanoGPTError(Exception):
    """A failure with a message a user can act on."""

    exit_code = 1


class InputError(NanoGPTError):
    """Bad input found before any work started: a missing file, a bad argument. Exit status 2."""

    exit_code = 2


class DataError(NanoGPTError):
    """A dataset cannot be built or read (a corrupt file, an empty split, an offline download)."""

    exit_code = 1


class CheckpointError(NanoGPTError):
    """No checkpoint of a run can be trusted, or one does not fit the model it should load into."""

    exit_code = 1


def exhaustion(e: BaseException) -> str | None:
    """A message for `e` when it says the machine ran out of memory or disk, else None.

    Neither is a bug to show a traceback for: the fix is a smaller size or a freer disk.
    """
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{e}; free some space and run it again (files are written whole or not at all)"
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, MemoryError) or (isinstance(e, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)):
        return f"out of memory: {text} (a smaller model or train.batch_size may fit)"
    return None
