"""The one error the spec half raises: every problem in a spec, each naming where it is."""

from __future__ import annotations

import datetime
import difflib
from collections.abc import Iterable

import attrs

from nanogpt.errors import InputError


@attrs.frozen
class Problem:
    """One thing wrong with a spec."""

    path: str
    """Dotted path of the offending value (`optimizer.lr`), or "" for the file as a whole."""
    message: str
    """What must hold and what was found, phrased the attrs way."""

    def line(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(InputError):
    """A spec (or an override of it) is invalid. Carries every problem found, not just the first.

    An InputError like any bad input found before work starts (exit 2); the command line prints
    `report()`, every problem on its own line, rather than the one-line `error: ...` of the others.

    `str()` gives the report users see: a header naming the file and the count, then one indented
    line per problem.
    """

    def __init__(self, source: str, problems: Iterable[Problem]):
        self.source = source
        self.problems = list(problems)
        super().__init__(self.report())

    def report(self) -> str:
        n = len(self.problems)
        if n == 1 and not self.problems[0].path:
            return f"{self.source}: {self.problems[0].message}"
        head = f"{self.source}: {n} problem{'s' if n != 1 else ''}"
        return "\n".join([head, *(f"  {p.line()}" for p in self.problems)])

    @classmethod
    def single(cls, source: str, path: str, message: str) -> SpecError:
        return cls(source, [Problem(path, message)])


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or "" when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def show_value(value: object) -> str:
    """A value as it would read in TOML-ish text: strings quoted, long ones, tables and arrays abbreviated."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(show_value(v) for v in value) + "]"
        return text if len(text) <= 60 else text[:57] + "...]"
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + "..." + text[-1]
