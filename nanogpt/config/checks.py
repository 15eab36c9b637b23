"""Field validators for spec tables.

Each is an attrs validator (called as `v(instance, attribute, value)`, raising ValueError with a
message that states what must hold and what was found) that also knows its JSON Schema keywords,
so the committed schema and the validation cannot drift apart.
"""

from __future__ import annotations

import re
from typing import Any

import attrs

from nanogpt.config.problems import show_value


@attrs.frozen
class Bound:
    """A number bound: `op` is one of >=, >, <=, <."""

    op: str
    limit: float

    _SCHEMA = {">=": "minimum", ">": "exclusiveMinimum", "<=": "maximum", "<": "exclusiveMaximum"}

    def __call__(self, inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is None:
            return
        ok = {
            ">=": value >= self.limit,
            ">": value > self.limit,
            "<=": value <= self.limit,
            "<": value < self.limit,
        }[self.op]
        if not ok:
            raise ValueError(f"must be {self.op} {self.limit!r} (got {show_value(value)})")

    def schema(self) -> dict[str, Any]:
        return {self._SCHEMA[self.op]: self.limit}


def at_least(limit: float) -> Bound:
    return Bound(">=", limit)


def above(limit: float) -> Bound:
    return Bound(">", limit)


def at_most(limit: float) -> Bound:
    return Bound("<=", limit)


def below(limit: float) -> Bound:
    return Bound("<", limit)


@attrs.frozen
class Pattern:
    """A string that matches a regular expression; `means` says in words what that is."""

    regex: str
    means: str

    def __call__(self, inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and not re.fullmatch(self.regex, value):
            raise ValueError(f"must be {self.means} (got {show_value(value)})")

    def schema(self) -> dict[str, Any]:
        return {"pattern": f"^(?:{self.regex})$"}


class ItemError(ValueError):
    """A problem with one item of an array; `index` says which."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@attrs.frozen
class Each:
    """Applies validators to every item of a tuple, naming the index that fails."""

    validators: tuple[Any, ...]

    def __call__(self, inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        for i, item in enumerate(value or ()):
            for v in self.validators:
                try:
                    v(inst, attribute, item)
                except ValueError as e:
                    raise ItemError(i, str(e)) from None

    def schema(self) -> dict[str, Any]:
        items: dict[str, Any] = {}
        for v in self.validators:
            items.update(v.schema())
        return {"items": items}


@attrs.frozen
class Length:
    """A tuple of exactly `n` items."""

    n: int

    def __call__(self, inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if value is not None and len(value) != self.n:
            raise ValueError(f"must have {self.n} items (got {len(value)})")

    def schema(self) -> dict[str, Any]:
        return {"minItems": self.n, "maxItems": self.n}


@attrs.frozen
class Unique:
    """A tuple that names each item once."""

    def __call__(self, inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        seen: set[Any] = set()
        for i, item in enumerate(value or ()):
            if item in seen:
                raise ItemError(i, f"names {show_value(item)} a second time (each item once)")
            seen.add(item)

    def schema(self) -> dict[str, Any]:
        return {"uniqueItems": True}


# A name that becomes one directory level: no separators, no "..", no hidden names.
SAFE_NAME = Pattern(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,127}", "a plain name of letters, digits and _.+=- (one directory level)")
SHA256 = Pattern(r"[0-9a-f]{64}", "64 lowercase hex digits (a sha256)")
MODULE = Pattern(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", "a dotted module name")


def validators_of(attribute: attrs.Attribute) -> tuple[Any, ...]:
    """The individual validators of a field, looking through `attrs.validators.and_`."""
    v = attribute.validator
    if v is None:
        return ()
    inner = getattr(v, "_validators", None)
    return tuple(inner) if inner is not None else (v,)
