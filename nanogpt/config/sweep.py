"""Sweeps, the torch-free half: axes from override words and a spec's `[sweep]` table, expanded to members.

An override whose value has commas outside brackets and quotes is an axis
(`optimizer.lr=1e-3,3e-4`); each piece is read as an override's value is (TOML, else a string), so
`optimizer.betas=[0.9,0.99]` stays one value. A spec's `[sweep]` table adds a grid
(`grid = { "optimizer.lr" = [1e-3, 3e-4] }`) and random draws
(`random = { "optimizer.weight_decay" = "loguniform(1e-3, 1e-1)" }`, `samples`, `seed`). The
members are the grid's points, the first axis slowest, each crossed with the `samples` draws,
which are a pure function of `seed`. A member is the spec plus override words: the command line's
words with each axis replaced by the member's value, after the values the table gives it.
"""

from __future__ import annotations

import itertools
import math
import random as random_module
import re
from collections.abc import Sequence
from typing import Any

import attrs

from nanogpt.config.canonical import toml_value
from nanogpt.config.problems import Problem, SpecError, did_you_mean, show_value
from nanogpt.config.load import parse_override_value

MAX_MEMBERS = 100_000
"""More members than this is a typo (an axis pasted twice), not an experiment."""

_OPEN = {"[": "]", "{": "}"}


def split_values(text: str) -> list[str]:
    """`text` cut at the commas that lie outside brackets and quotes (TOML's strings, arrays, tables).

    `1e-3,3e-4` -> two pieces; `[0.9,0.99]` and `"a,b"` -> one. Pieces keep their spaces.
    """
    pieces, start, depth, i, n = [], 0, 0, 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'":
            i = _string_end(text, i)
            continue
        if c in _OPEN:
            depth += 1
        elif c in "]}" and depth:
            depth -= 1
        elif c == "," and not depth:
            pieces.append(text[start:i])
            start = i + 1
        i += 1
    pieces.append(text[start:])
    return pieces


def _string_end(text: str, i: int) -> int:
    """The index just past the TOML string opening at `i` (the end of `text` when it never closes)."""
    quote = text[i] * 3 if text.startswith(text[i] * 3, i) else text[i]
    escapes = quote[0] == '"'  # 'literal' strings have no escapes
    j = i + len(quote)
    while j < len(text):
        if escapes and text[j] == "\\":
            j += 2
            continue
        if text.startswith(quote, j):
            return j + len(quote)
        j += 1
    return len(text)


@attrs.frozen
class Axis:
    """One swept key and its values, in order."""

    key: str
    """Dotted path of the spec field."""
    values: tuple[Any, ...]
    """What the members set it to (TOML values)."""


def axis_of(word: str) -> Axis | None:
    """The axis a `key=v1,v2,...` word stands for; None for a plain override (one value).

    Raises ValueError for an axis with an empty value (`lr=1e-3,`).
    """
    key, eq, text = word.partition("=")
    if not eq:
        return None
    pieces = split_values(text)
    if len(pieces) < 2:
        return None
    if any(not p.strip() for p in pieces):
        raise ValueError(f"override {word!r}: an axis needs a value between every two commas")
    return Axis(key.strip(), tuple(parse_override_value(p.strip()) for p in pieces))


# --------------------------------------------------------------------------- random draws

_DISTRIBUTION = re.compile(r"\s*([a-z_]+)\s*\((.*)\)\s*", re.DOTALL)


@attrs.frozen
class Distribution:
    """What a random axis draws from: `uniform(a, b)`, `loguniform(a, b)`, `randint(a, b)`
    (both ends included) or `choice(x, y, ...)`."""

    kind: str
    args: tuple[Any, ...]

    KINDS = ("uniform", "loguniform", "randint", "choice")

    @classmethod
    def parse(cls, text: str) -> Distribution:
        """Read `kind(args)`; the arguments are TOML values. Raises ValueError saying what is wrong."""
        m = _DISTRIBUTION.fullmatch(text)
        if not m:
            raise ValueError(f"must be one of {', '.join(k + '(...)' for k in cls.KINDS)} (got {show_value(text)})")
        kind, inner = m.group(1), m.group(2)
        if kind not in cls.KINDS:
            raise ValueError(f"unknown distribution {kind!r}{did_you_mean(kind, cls.KINDS)} (known: {', '.join(cls.KINDS)})")
        pieces = split_values(inner) if inner.strip() else []
        if any(not p.strip() for p in pieces):
            raise ValueError(f"{text.strip()}: an empty argument")
        args = tuple(parse_override_value(p.strip()) for p in pieces)
        dist = cls(kind, args)
        dist._check(text.strip())
        return dist

    def _check(self, text: str) -> None:
        if self.kind == "choice":
            if not self.args:
                raise ValueError(f"{text}: choice needs at least one value")
            return
        if len(self.args) != 2:
            raise ValueError(f"{text}: {self.kind} takes two numbers, a and b (got {len(self.args)})")
        a, b = self.args
        if self.kind == "randint":
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in self.args):
                raise ValueError(f"{text}: randint takes two integers")
            if a > b:
                raise ValueError(f"{text}: randint needs a <= b")
            return
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in self.args):
            raise ValueError(f"{text}: {self.kind} takes two finite numbers")
        if not a < b:
            raise ValueError(f"{text}: {self.kind} needs a < b")
        if self.kind == "loguniform" and a <= 0:
            raise ValueError(f"{text}: loguniform needs 0 < a")

    def draw(self, rng: random_module.Random) -> Any:
        if self.kind == "choice":
            return rng.choice(self.args)
        a, b = self.args
        if self.kind == "randint":
            return rng.randint(a, b)
        if self.kind == "uniform":
            return rng.uniform(a, b)
        return math.exp(rng.uniform(math.log(a), math.log(b)))

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(toml_value(a) for a in self.args)})"


@attrs.frozen
class RandomAxis:
    """One key drawn at random for each sample."""

    key: str
    distribution: Distribution


# ------------------------------------------------------------------------- the [sweep] table


@attrs.frozen(kw_only=True)
class SweepSpec:
    """A spec's `[sweep]` table: the runs `nanogpt sweep SPEC` launches from it."""

    grid: tuple[Axis, ...] = ()
    """Dotted key -> array of values; every combination is a member, the first key slowest."""
    random: tuple[RandomAxis, ...] = ()
    """Dotted key -> "uniform(a, b)", "loguniform(a, b)", "randint(a, b)" (a <= n <= b) or "choice(x, y, ...)", drawn once per sample."""
    samples: int = 1
    """How many random draws (required with `random`); each is crossed with the grid."""
    seed: int = 0
    """Seed of the random draws: the same seed draws the same members."""

    FIELDS = ("grid", "random", "samples", "seed")

    @classmethod
    def from_toml(cls, table: Any, source: str) -> SweepSpec:
        """Check a `[sweep]` table as TOML gave it. Raises SpecError naming every problem (`sweep.*`)."""
        if table is None:
            return cls()
        if not isinstance(table, dict):
            raise SpecError.single(source, "sweep", f"must be a table (got {show_value(table)})")
        problems: list[Problem] = [
            Problem(f"sweep.{k}", "unknown key" + did_you_mean(k, cls.FIELDS)) for k in table if k not in cls.FIELDS
        ]
        grid = []
        for key, values in _table_items(table, "grid", problems):
            if not isinstance(values, list) or not values:
                problems.append(Problem(f"sweep.grid.{_quoted(key)}", f"must be a non-empty array of values (got {show_value(values)})"))
            else:
                grid.append(Axis(key, tuple(values)))
        draws = []
        for key, text in _table_items(table, "random", problems):
            where = f"sweep.random.{_quoted(key)}"
            if not isinstance(text, str):
                problems.append(Problem(where, f"must be a string such as \"loguniform(1e-4, 1e-2)\" (got {show_value(text)})"))
                continue
            try:
                draws.append(RandomAxis(key, Distribution.parse(text)))
            except ValueError as e:
                problems.append(Problem(where, str(e)))
            if key in {a.key for a in grid}:
                problems.append(Problem(where, f"{key} is in sweep.grid too: sweep it one way"))
        samples = _integer(table, "samples", 1, 1, problems)
        seed = _integer(table, "seed", 0, 0, problems)
        if "random" in table and "samples" not in table:
            problems.append(Problem("sweep.samples", "is required with sweep.random: how many draws to make"))
        if "samples" in table and not table.get("random"):
            problems.append(Problem("sweep.samples", "has no effect without sweep.random"))
        if problems:
            raise SpecError(source, problems)
        return cls(grid=tuple(grid), random=tuple(draws), samples=samples, seed=seed)


def _quoted(key: str) -> str:
    return f'"{key}"' if not re.fullmatch(r"[A-Za-z0-9_-]+", key) else key


def _table_items(table: dict[str, Any], name: str, problems: list[Problem]) -> list[tuple[str, Any]]:
    value = table.get(name, {})
    if not isinstance(value, dict):
        problems.append(Problem(f"sweep.{name}", f"must be a table of dotted key = ... (got {show_value(value)})"))
        return []
    items = []
    for key, v in _dotted(value):
        if not all(key.split(".")):
            problems.append(Problem(f"sweep.{name}.{_quoted(key)}", "must be a dotted key such as \"optimizer.lr\""))
        else:
            items.append((key, v))
    return items


def _dotted(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """`{"optimizer.lr" = [...]}` and `{optimizer = {lr = [...]}}` alike -> [("optimizer.lr", [...])]."""
    out = []
    for key, value in table.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out += _dotted(value, path + ".")
        else:
            out.append((path, value))
    return out


def _integer(table: dict[str, Any], name: str, default: int, least: int, problems: list[Problem]) -> int:
    value = table.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value < 2**63:
        problems.append(Problem(f"sweep.{name}", f"must be an integer >= {least} (got {show_value(value)})"))
        return default
    return value


# ------------------------------------------------------------------------------- members


@attrs.frozen
class Member:
    """One run of a sweep."""

    index: int
    """Its place in the sweep, from 0."""
    values: dict[str, Any] = attrs.field(eq=False)
    """Swept key -> the value this member gives it, in the order of the axes."""
    overrides: tuple[str, ...]
    """The override words that make this member from the spec."""

    def label(self) -> str:
        """`key=value` words: how the member is shown."""
        return " ".join(f"{k}={toml_value(v)}" for k, v in self.values.items())


@attrs.frozen
class SweepPlan:
    """The axes and fixed overrides of a sweep: what its members are, before any is validated."""

    grid: tuple[Axis, ...]
    """Grid axes, the first slowest: the table's, then the command line's."""
    random: tuple[RandomAxis, ...]
    samples: int
    seed: int
    words: tuple[tuple[str, Axis | None], ...]
    """The command line's override words, each with the axis it stands for (None: a plain override)."""

    @property
    def size(self) -> int:
        return math.prod(len(a.values) for a in self.grid) * (self.samples if self.random else 1)

    def axes_record(self) -> dict[str, Any]:
        """Swept key -> its values (a grid axis) or its distribution (a random one), as sweep.json holds them."""
        return {**{a.key: list(a.values) for a in self.grid}, **{r.key: str(r.distribution) for r in self.random}}

    def members(self) -> list[Member]:
        """Every member in order: the grid's points, the first axis slowest, each crossed with the draws."""
        rng = random_module.Random(self.seed)
        draws = [{r.key: r.distribution.draw(rng) for r in self.random} for _ in range(self.samples)] if self.random else [{}]
        cli_keys = {axis.key for _, axis in self.words if axis is not None}
        members = []
        for point in itertools.product(*(a.values for a in self.grid)):
            grid_values = dict(zip((a.key for a in self.grid), point))
            for drawn in draws:
                values = {**grid_values, **drawn}
                table_words = [f"{a.key}={toml_value(values[a.key])}" for a in self.grid if a.key not in cli_keys]
                table_words += [f"{k}={toml_value(v)}" for k, v in drawn.items()]
                cli_words = [word if axis is None else f"{axis.key}={toml_value(values[axis.key])}" for word, axis in self.words]
                members.append(Member(len(members), values, tuple(table_words + cli_words)))
        return members


def plan_sweep(table: Any, words: Sequence[str], source: str) -> SweepPlan:
    """A sweep from a spec's `[sweep]` table (None when it has none) and the command line's override words.

    Words for `sweep.*` change the table. A key the command line sets (as an axis or a plain
    value) is no longer swept by the table; of two axes for one key the last wins. Raises SpecError.
    """
    problems: list[Problem] = []
    table = dict(table) if isinstance(table, dict) else table
    cli: list[tuple[str, str, Axis | None]] = []  # (key, word, axis)
    for word in words:
        key = word.partition("=")[0].strip()
        if key == "sweep" or key.startswith("sweep."):
            table = {} if table is None else table
            if isinstance(table, dict):  # (a table of the wrong type is reported below)
                _set_sweep_key(table, word, problems)
            continue
        try:
            axis = axis_of(word)
        except ValueError as e:
            problems.append(Problem("", str(e)))
            continue
        cli.append((key, word, axis))
    if problems:
        raise SpecError(source, problems)
    spec = SweepSpec.from_toml(table, source)

    last_word_of = {key: i for i, (key, _, _) in enumerate(cli)}
    kept = []
    for i, (key, word, axis) in enumerate(cli):
        if axis is not None and last_word_of[key] != i:
            continue  # a later word sets this key: the axis is overridden
        kept.append((word, axis))
    on_cli = set(last_word_of)
    grid = tuple(a for a in spec.grid if a.key not in on_cli) + tuple(axis for _, axis in kept if axis is not None)
    draws = tuple(r for r in spec.random if r.key not in on_cli)
    plan = SweepPlan(grid, draws, spec.samples, spec.seed, tuple(kept))
    if plan.size > MAX_MEMBERS:
        raise SpecError.single(source, "", f"the sweep has {plan.size:,} members, more than {MAX_MEMBERS:,}")
    return plan


def _set_sweep_key(table: dict[str, Any], word: str, problems: list[Problem]) -> None:
    """Apply a `sweep.samples=8` or `sweep.grid."optimizer.lr"=[1e-3,1e-4]` word to the table."""
    key, _, text = word.partition("=")
    parts = [p.strip('"') for p in key.strip().split(".")[1:]]
    if not parts or not all(parts):
        problems.append(Problem("", f"override {word!r} must name a key of the [sweep] table (sweep.samples=8)"))
        return
    value = parse_override_value(text.strip())
    if parts[0] in ("grid", "random") and len(parts) > 1:
        inner = table.get(parts[0])
        table[parts[0]] = inner = dict(inner) if isinstance(inner, dict) else {}
        inner[".".join(parts[1:])] = value
    else:
        table[".".join(parts)] = value
