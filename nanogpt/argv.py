"""The words of a command line: a verb's SPEC and key=value overrides anywhere among its flags.

What every verb's parser shares (cli.py's verbs and `scaling`'s own): usage errors that exit 2
with the usage line and never a SystemExit from inside the library, and overrides told from
spec paths.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nanogpt.errors import NanoGPTError

EPILOG = (
    "Overrides are dotted.key=value words, anywhere among the flags, their values read as TOML: "
    "train.max_iters=100 optimizer.betas=[0.9,0.99]. A word that names an existing file is a spec even "
    "when it holds '=' (runs/x/lr=1e-3/spec.toml), and every word after -- is a spec."
)


class UsageError(NanoGPTError):
    """Arguments a verb cannot take; the parser has printed its usage line."""

    exit_code = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is a UsageError (exit 2, after the usage line), not a SystemExit."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        raise UsageError(f"usage error: {message}")


def split_overrides(words: Sequence[str], specs: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """Command-line words -> (spec paths, overrides).

    A word with '=' is an override unless it names an existing file; `specs` (the words after
    `--`) are paths whatever they hold.
    """
    paths, overrides = [], []
    for word in words:
        (overrides if "=" in word and not _is_file(word) else paths).append(word)
    return paths + list(specs), overrides


def _is_file(word: str) -> bool:
    try:
        return Path(word).is_file()
    except (OSError, ValueError):  # a name too long, a NUL in it
        return False


def parse_words(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """One verb's arguments, its SPEC and key=value words anywhere among its flags.

    argparse alone takes positional words only before the first flag (`run SPEC --force k=v` would be
    "unrecognized arguments"); intermixed parsing takes them anywhere. The words after `--` are
    set aside as `args.specs`, so that a spec path holding '=' can always be given.
    """
    argv = list(argv)
    specs: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, specs = argv[:at], argv[at + 1:]
    args = parser.parse_intermixed_args(argv)
    args.specs = specs
    return args
