"""Errors meant for users: the CLI prints their message (never a traceback) and exits with their code."""

from __future__ import annotations


class NanoGPTError(Exception):
    """A failure with a message a user can act on."""

    exit_code = 1


class InputError(NanoGPTError):
    """Bad input found before any work started: a missing file, a bad argument. Exit status 2."""

    exit_code = 2


class DataError(NanoGPTError):
    """A dataset cannot be built or read (a corrupt file, an empty split, an offline download)."""

    exit_code = 1
