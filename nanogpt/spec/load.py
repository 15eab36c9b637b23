"""Read a spec: TOML, `extends`, overrides, plugins, pretrained architecture, then validation.

`load_spec(path, overrides)` is the one way in. It works on raw dicts until the very end, so that
validation runs once, on the final values, and every problem is reported together; and it
remembers where each value came from (a file, an override, a pretrained model, or the default),
which is what the manifest records and what error messages point at.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from nanogpt.registry import REGISTRIES
from nanogpt.spec.convert import structure
from nanogpt.spec.diff import flatten
from nanogpt.spec.errors import Problem, SpecError, show_value
from nanogpt.spec.pretrained import ARCH_FIELDS, NotPretrained, arch_of
from nanogpt.spec.tables import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT = "default"
COMPONENT_DEFAULT_KINDS = {r.table: r.default_kind for r in REGISTRIES.values()}
SWEEP_TABLE = "sweep"
"""The top-level table that makes a spec a sweep (nanogpt.spec.sweep reads it)."""


@attrs.frozen
class SpecOrigin:
    """Where a loaded spec came from."""

    path: str
    """The spec file as the user named it."""
    files: tuple[str, ...]
    """Every file read: the spec, then the files it extends, depth first."""
    overrides: tuple[str, ...]
    """The `key=value` words, as given."""
    provenance: dict[str, str] = attrs.field(eq=False)
    """Dotted path -> where its value was set: a file, "override key=value", "pretrained NAME";
    paths not listed have their default."""
    extended: dict[str, Any] = attrs.field(factory=dict, eq=False)
    """Dotted path -> value, as the files this spec `extends` set them (merged, before the spec's
    own values and overrides): what "the spec it extends" says, for showing what this one changes."""

    def source_of(self, path: str) -> str:
        return self.provenance.get(path, DEFAULT)


@attrs.frozen
class SpecTree:
    """A spec file read and merged with everything it extends: raw data, before overrides and validation.

    Read once, it resolves into many specs (a sweep's members) without touching the files again.
    """

    source: str
    """The spec file as the user named it."""
    raw: dict[str, Any] = attrs.field(eq=False)
    """The merged tables, as TOML gave them (never modified: `resolve_spec` works on a copy)."""
    provenance: dict[str, str] = attrs.field(eq=False)
    """Dotted path -> the file that set it."""
    files: tuple[str, ...]
    """Every file read: the spec, then the files it extends, depth first."""
    extended: dict[str, Any] = attrs.field(eq=False)
    """What the files this spec extends set, merged, before its own values."""
    sweep: dict[str, Any] | None = attrs.field(eq=False)
    """The `[sweep]` table as written (read by `nanogpt sweep`), or None when the spec has none."""


def read_spec(path: str | os.PathLike[str]) -> SpecTree:
    """Read a spec file and what it `extends`. Raises SpecError for unreadable files, bad TOML, cycles."""
    source = str(path)
    problems: list[Problem] = []
    files: list[str] = []
    extended: dict[str, Any] = {}
    raw, provenance = _read_tree(Path(path), source, [], files, problems, extended)
    if not problems and not raw:
        problems.append(Problem("", "is empty: a spec needs at least `name`"))
    if problems:
        raise SpecError(source, problems)
    sweep = raw.pop(SWEEP_TABLE, None)
    _forget(provenance, SWEEP_TABLE)
    return SpecTree(source, raw, provenance, tuple(files), extended, sweep)


def resolve_spec(
    tree: SpecTree, overrides: Sequence[str] = (), *, check_files: bool = True, sweep_member: bool = False
) -> tuple[Experiment, SpecOrigin]:
    """Apply overrides to a read spec and validate it. Raises SpecError listing every problem.

    A spec with a `[sweep]` table describes many runs, so it is refused unless `sweep_member` says
    this is one of them.
    """
    source = tree.source
    raw, provenance = _copy(tree.raw), dict(tree.provenance)
    problems: list[Problem] = []
    if tree.sweep is not None and not sweep_member:
        problems.append(Problem(
            SWEEP_TABLE,
            "a [sweep] table makes this spec a family of runs: launch them with `nanogpt sweep SPEC` "
            "(`--list` shows them), or remove the table to run one",
        ))
    for word in overrides:
        problems += _apply_override(raw, provenance, word)
    problems += _import_plugins(raw)
    if problems:
        raise SpecError(source, problems)

    # Disagreements with the pretrained model are reported together with everything else.
    problems = _fill_from_pretrained(raw, provenance, check_files)
    exp, structure_problems = structure(raw)
    problems += structure_problems
    if exp is not None and check_files:
        problems += missing_files(exp)
    if problems:
        raise SpecError(source, [_with_source(p, provenance, source) for p in problems])
    origin = SpecOrigin(source, tree.files, tuple(overrides), provenance, flatten(tree.extended))
    return exp, origin


def load_spec(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, check_files: bool = True,
    sweep_member: bool = False,
) -> tuple[Experiment, SpecOrigin]:
    """Load, merge, override and validate a spec file. Raises SpecError listing every problem."""
    return resolve_spec(read_spec(path), overrides, check_files=check_files, sweep_member=sweep_member)


def loads_spec(text: str, source: str = "<spec>", overrides: Sequence[str] = ()) -> Experiment:
    """Validate spec text that extends nothing (tests, and specs that travel inside manifests)."""
    problems: list[Problem] = []
    raw = _parse(text, problems)
    if problems:
        raise SpecError(source, problems)
    if "extends" in raw:
        raise SpecError.single(source, "extends", "is not allowed in a spec given as text")
    provenance = {p: source for p in flatten(raw)}
    for word in overrides:
        problems += _apply_override(raw, provenance, word)
    problems += _import_plugins(raw)
    if problems:
        raise SpecError(source, problems)
    exp, problems = structure(raw)
    if problems:
        raise SpecError(source, [_with_source(p, provenance, source) for p in problems])
    return exp


# ---------------------------------------------------------------------- files and `extends`


def _parse(text: str, problems: list[Problem], where: str = "") -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem("", f"{where}not valid TOML: {e}"))
        return {}


def _read_tree(
    path: Path, shown: str, stack: list[Path], files: list[str], problems: list[Problem],
    bases_out: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One file merged over everything it extends; provenance maps leaf paths to files.

    `bases_out`, when given, receives the merge of what the file extends, before its own values.
    """
    where = "" if not stack else f"{shown}: "
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(Problem("extends" if stack else "", f"{where}file not found"))
        return {}, {}
    except (OSError, ValueError) as e:  # ValueError: undecodable bytes, a NUL in the path
        problems.append(Problem("extends" if stack else "", f"{where}cannot be read: {e}"))
        return {}, {}
    files.append(shown)
    own = _parse(text, problems, where)
    bases = own.pop("extends", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        problems.append(Problem("extends", f"{where}must be a path or an array of paths (got {show_value(bases)})"))
        bases = []

    merged: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    here = path.resolve()
    for base in bases:
        base_path = (path.parent / base)
        base_shown = os.path.normpath(os.path.join(os.path.dirname(shown), base))
        try:
            base_resolved = base_path.resolve()
        except (OSError, ValueError, RuntimeError) as e:  # a NUL in the path, a symlink loop
            problems.append(Problem("extends", f"{where}{show_value(base)} is not a usable path: {e}"))
            continue
        if base_resolved in (*stack, here):
            chain = " -> ".join([*(p.name for p in (*stack, here)), base_path.name])
            problems.append(Problem("extends", f"{where}cycle: {chain}"))
            continue
        base_raw, base_prov = _read_tree(base_path, base_shown, [*stack, here], files, problems)
        _merge(merged, provenance, base_raw, base_prov)
    if bases_out is not None:
        bases_out.update(_copy(merged))
    _merge(merged, provenance, own, {p: shown for p in flatten(own)})
    return merged, provenance


def _merge(
    into: dict[str, Any], provenance: dict[str, str], over: dict[str, Any], over_prov: dict[str, str], prefix: str = ""
) -> None:
    """Merge `over` into `into`: tables recursively, everything else replaced.

    A component table whose `kind` changes is replaced whole: the old kind's fields mean nothing
    to the new one.
    """
    for key, value in over.items():
        path = f"{prefix}{key}"
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if not prefix and key in COMPONENT_DEFAULT_KINDS and "kind" in value:
                default = COMPONENT_DEFAULT_KINDS[key]
                if value["kind"] != old.get("kind", default):
                    into[key] = {}
                    _forget(provenance, path)
            _merge(into[key], provenance, value, over_prov, path + ".")
        else:
            _forget(provenance, path)
            into[key] = _copy(value)
            provenance.update({p: s for p, s in over_prov.items() if p == path or p.startswith(path + ".")})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _forget(provenance: dict[str, str], path: str) -> None:
    for p in [p for p in provenance if p == path or p.startswith(path + ".")]:
        del provenance[p]


# ------------------------------------------------------------------------------- overrides


def parse_override_value(text: str) -> Any:
    """A value as TOML reads it (`[0.9, 0.99]`, `false`, `1e-4`); anything else as a string."""
    try:
        parsed = tomllib.loads(f"v = {text}")
    except tomllib.TOMLDecodeError:
        return text
    return parsed["v"] if list(parsed) == ["v"] else text


def _apply_override(raw: dict[str, Any], provenance: dict[str, str], word: str) -> list[Problem]:
    key, eq, text = word.partition("=")
    key = key.strip()
    parts = key.split(".")
    if not eq or not key or not all(parts):
        return [Problem("", f"override {word!r} must be dotted.key=value")]
    value = parse_override_value(text.strip())
    table: Any = raw
    for i, part in enumerate(parts[:-1]):
        table = table.setdefault(part, {})
        if not isinstance(table, dict):
            where = ".".join(parts[: i + 1])
            return [Problem(key, f"override {word!r}: {where} is not a table")]
    last = parts[-1]
    if len(parts) == 2 and last == "kind" and parts[0] in COMPONENT_DEFAULT_KINDS:
        if value != table.get("kind", COMPONENT_DEFAULT_KINDS[parts[0]]):
            table.clear()  # a new kind starts from its own defaults
            _forget(provenance, parts[0])
    if isinstance(table.get(last), dict) and not isinstance(value, dict):
        return [Problem(key, f"override {word!r}: {key} is a table, not a value")]
    table[last] = value
    _forget(provenance, key)
    source = f"override {word}"
    if isinstance(value, dict):
        provenance.update({f"{key}.{p}": source for p in flatten(value)})
    else:
        provenance[key] = source
    return []


# --------------------------------------------------------------------------------- plugins


def _import_plugins(raw: dict[str, Any]) -> list[Problem]:
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list):
        return []  # structuring reports the type
    problems = []
    for i, name in enumerate(plugins):
        if not isinstance(name, str) or not name:
            continue
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - a plugin's own error is reported, not raised
            problems.append(Problem(f"plugins[{i}]", f"cannot import {name!r}: {type(e).__name__}: {e}"))
    return problems


# ------------------------------------------------------------------- pretrained architecture


def _fill_from_pretrained(raw: dict[str, Any], provenance: dict[str, str], check_files: bool) -> list[Problem]:
    """Architecture fields the spec leaves out come from `init_from`'s weights; stated ones must agree."""
    model = raw.get("model")
    if not isinstance(model, dict) or model.get("kind", "gpt") != "gpt":
        return []
    init_from = model.get("init_from", "scratch")
    if not isinstance(init_from, str) or init_from in ("scratch", ""):
        return []
    try:
        arch = arch_of(init_from)
    except NotPretrained as e:
        return [Problem("model.init_from", str(e))] if check_files else []
    problems = []
    for field in ARCH_FIELDS:
        if field not in arch:
            continue
        theirs = arch[field]
        if field not in model:
            model[field] = theirs
            provenance[f"model.{field}"] = f"pretrained {init_from}"
            continue
        ours = model[field]
        if type(ours) is not type(theirs):
            continue  # a wrong type is reported by structuring, not as a disagreement
        if field == "block_size":
            if ours > theirs:
                problems.append(Problem("model.block_size", f"{ours} must not exceed the pretrained model's ({theirs})"))
        elif ours != theirs:
            problems.append(
                Problem(f"model.{field}", f"{show_value(ours)} must equal the pretrained model's ({show_value(theirs)}), or be left out")
            )
    return problems


# ----------------------------------------------------------------------- files a spec names


def missing_files(exp: Experiment) -> list[Problem]:
    """Input files the spec names that are not there (outputs are not checked)."""
    data = exp.data
    source = getattr(data, "source", None)
    if not source or not source.startswith("file:"):
        return []
    pattern = source[len("file:"):]
    if _is_file(Path(data.data_dir, data.dataset, "meta.json")) or _glob_matches(pattern):
        return []
    return [Problem("data.source", f"no file matches {pattern!r}")]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL in it: no such file either way
        return False


def _glob_matches(pattern: str) -> bool:
    import glob

    if not glob.has_magic(pattern):
        return _is_file(Path(pattern))
    return any(_is_file(Path(p)) for p in glob.iglob(pattern, recursive=True))


def _source_of(path: str, provenance: dict[str, str]) -> str | None:
    """Where the value at `path` was set: its own entry, its array's, or the one source of a whole table."""
    array_path = path.partition("[")[0]
    for p in (path, array_path):
        if p in provenance:
            return provenance[p]
    below = {s for p, s in provenance.items() if p.startswith(array_path + ".")}
    return below.pop() if len(below) == 1 else None


def _with_source(problem: Problem, provenance: dict[str, str], top: str) -> Problem:
    """Point at the file or override that set a bad value, when it is not the spec itself."""
    source = _source_of(problem.path, provenance)
    if source is None or source == top or source == DEFAULT:
        return problem
    where = source if source.startswith(("override", "pretrained")) else f"set in {source}"
    return Problem(problem.path, f"{problem.message} ({where})")
