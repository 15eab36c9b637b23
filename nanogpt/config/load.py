"""Read a spec: TOML, `extends`, overrides, plugins, pretrained architecture, then validation.

`load_spec(path, overrides)` is the one way in. It works on raw dicts until the very end, so that
validation runs once, on the final values, and every problem is reported together; and it
remembers where each value came from (a file, an override, a pretrained model, or the default),
which is what the manifest records and what error messages point at.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from nanogpt.registry import MODELS, REGISTRIES, import_plugin, load_entry_points
from nanogpt.config.convert import structure
from nanogpt.config.dotted import flatten
from nanogpt.config.problems import Problem, SpecError, show_value
from nanogpt.config.pretrained import HF_ARCHS, HubUnreachable, NotPretrained, arch_of
from nanogpt.config.tables import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

DEFAULT = "default"
COMPONENT_DEFAULT_KINDS = {r.table: r.default_kind for r in REGISTRIES.values()}
SWEEP_TABLE = "sweep"
"""The top-level table that makes a spec a sweep (nanogpt.config.sweep reads it)."""

# Limits no real spec comes near, so that a hostile one fails with a message instead of a
# RecursionError, a hang or all of memory.
MAX_SPEC_BYTES = 1 << 20
"""Largest spec file read (1 MiB; the biggest shipped spec is under 2 kB)."""
MAX_NESTING = 32
"""Deepest nesting of tables and arrays in a spec or an override's value."""
MAX_EXTENDS_DEPTH = 32
"""Longest chain of `extends`."""
MAX_SPEC_FILES = 256
"""Most files one spec may read through `extends` (a diamond of extends reads a file once per path to it)."""


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
        problems += _tokenizer_fits_pretrained(exp)
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
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problems.append(Problem("", f"{where}not valid TOML: {e}"))
        return {}
    except RecursionError:  # the TOML parser recurses once per level of nesting
        problems.append(Problem("", f"{where}nests arrays or tables too deeply (a spec nests at most {MAX_NESTING} levels)"))
        return {}
    too_deep = _deeper_than(data, MAX_NESTING)
    if too_deep is not None:
        problems.append(Problem(too_deep, f"{where}nests more than {MAX_NESTING} levels of arrays or tables"))
        return {}
    return data


def _deeper_than(value: Any, limit: int) -> str | None:
    """The dotted path of a place where tables and arrays nest more than `limit` deep, or None."""
    stack = [(value, 0, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict):
            children = [(v, f"{path}.{k}" if path else str(k)) for k, v in item.items()]
        elif isinstance(item, list):
            children = [(v, f"{path}[{i}]") for i, v in enumerate(item)]
        else:
            continue
        if depth >= limit:
            return path
        stack += [(child, depth + 1, child_path) for child, child_path in children]
    return None


class _Unreadable(Exception):
    pass


def _read_spec_file(path: Path) -> str:
    """A spec file's text: only a regular file (a FIFO would block, /dev/zero never ends), at most MAX_SPEC_BYTES."""
    # O_NONBLOCK: opening a FIFO waits for a writer otherwise; fstat then says what it is
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise _Unreadable(f"it is {_file_kind(mode)}, not a regular file")
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise _Unreadable(f"it is larger than {MAX_SPEC_BYTES:,} bytes, the most a spec may be")
    return data.decode("utf-8")


def _file_kind(mode: int) -> str:
    kinds = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _read_tree(
    path: Path, shown: str, stack: list[Path], files: list[str], problems: list[Problem],
    bases_out: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, str]]:
    """One file merged over everything it extends; provenance maps leaf paths to files.

    `bases_out`, when given, receives the merge of what the file extends, before its own values.
    """
    where = "" if not stack else f"{shown}: "
    if len(stack) > MAX_EXTENDS_DEPTH:
        problems.append(Problem("extends", f"{where}the chain of extends is more than {MAX_EXTENDS_DEPTH} files long"))
        return {}, {}
    if len(files) >= MAX_SPEC_FILES:
        problems.append(Problem("extends", f"{where}more than {MAX_SPEC_FILES} files read through extends"))
        return {}, {}
    try:
        text = _read_spec_file(path)
    except FileNotFoundError:
        problems.append(Problem("extends" if stack else "", f"{where}file not found"))
        return {}, {}
    except IsADirectoryError:  # where a directory cannot even be opened
        problems.append(Problem("extends" if stack else "", f"{where}cannot be read: it is a directory, not a regular file"))
        return {}, {}
    except (OSError, ValueError, _Unreadable) as e:  # ValueError: undecodable bytes, a NUL in the path
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
                    _forget_value(provenance, old, path)
            _merge(into[key], provenance, value, over_prov, path + ".")
        else:
            # only the paths of the old and new values are touched: merging stays linear in the
            # number of keys (rescanning every path seen so far made 20,000 keys take a minute)
            _forget_value(provenance, old, path)
            into[key] = _copy(value)
            provenance.update({p: over_prov[p] for p in _leaf_paths(value, path) if p in over_prov})


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _leaf_paths(value: Any, path: str) -> list[str]:
    """The paths `flatten` gives the leaves of `value` when it sits at `path`."""
    return list(flatten(value, path)) if isinstance(value, dict) and value else [path]


def _forget_value(provenance: dict[str, str], value: Any, path: str) -> None:
    """Drop the provenance of `value`, which sits at `path`: its leaves' and its tables' own (a table
    that was empty when a file set it was recorded as a leaf, and keys merged into it since do not
    replace that entry)."""
    provenance.pop(path, None)
    if isinstance(value, dict):
        for key, inner in value.items():
            _forget_value(provenance, inner, f"{path}.{key}")


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
    if not text.strip():
        # TOML has no null: nothing after "=" is how a command line says "unset" (the default)
        return _unset(raw, provenance, parts, word)
    try:
        value = parse_override_value(text.strip())
        too_deep = _deeper_than(value, MAX_NESTING - len(parts)) is not None
    except RecursionError:  # the TOML parser recurses once per level of nesting
        too_deep = True
    if too_deep:
        return [Problem(key, f"override {key}=...: its value nests more than {MAX_NESTING} levels of arrays or tables")]
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


def _unset(raw: dict[str, Any], provenance: dict[str, str], parts: list[str], word: str) -> list[Problem]:
    """`key=`: drop the key, so that it takes its default (a component's `kind` resets its table)."""
    key = ".".join(parts)
    table: Any = raw
    for i, part in enumerate(parts[:-1]):
        table = table.get(part)
        if table is None:
            return []  # nothing set there: it is the default already
        if not isinstance(table, dict):
            return [Problem(key, f"override {word!r}: {'.'.join(parts[: i + 1])} is not a table")]
    if len(parts) == 2 and parts[1] == "kind" and parts[0] in COMPONENT_DEFAULT_KINDS:
        if table.get("kind", COMPONENT_DEFAULT_KINDS[parts[0]]) != COMPONENT_DEFAULT_KINDS[parts[0]]:
            table.clear()  # back to the default kind, which starts from its own defaults
            _forget(provenance, parts[0])
    table.pop(parts[-1], None)
    _forget(provenance, key)
    return []


# --------------------------------------------------------------------------------- plugins


def _import_plugins(raw: dict[str, Any]) -> list[Problem]:
    """Import the installed plugins and those the spec names; a Problem for each that fails."""
    problems = [Problem("plugins", failure) for failure in load_entry_points()]
    plugins = raw.get("plugins", [])
    if not isinstance(plugins, list):
        return problems  # structuring reports the type
    for i, name in enumerate(plugins):
        if not isinstance(name, str) or not name:
            continue
        failure = import_plugin(name)
        if failure is not None:
            problems.append(Problem(f"plugins[{i}]", f"cannot import {name!r}: {failure}"))
    return problems


# ------------------------------------------------------------------- pretrained architecture


def _fill_from_pretrained(raw: dict[str, Any], provenance: dict[str, str], check_files: bool) -> list[Problem]:
    """Architecture fields the spec leaves out come from `init_from`'s weights; stated ones must agree."""
    model = raw.get("model")
    if not isinstance(model, dict):
        return []
    kind = model.get("kind", MODELS.default_kind)
    spec_class = MODELS.spec_class(kind) if isinstance(kind, str) else None
    if spec_class is None or not spec_class.ARCH_FIELDS:
        return []  # an unknown kind is reported by structuring; a kind that declares no fields reads none
    init_from = model.get("init_from", "scratch")
    if not isinstance(init_from, str) or init_from in ("scratch", ""):
        return []
    try:
        arch = arch_of(init_from, spec_class)
    except HubUnreachable:
        return []  # offline and not cached: the stated fields are checked when the weights load
    except NotPretrained as e:
        return [Problem("model.init_from", str(e))] if check_files else []
    problems = []
    for field in spec_class.ARCH_FIELDS:
        if field not in arch:
            continue
        theirs = arch[field]
        if field not in model:
            if theirs is None:
                continue  # unset in the weights is unset here (TOML has no null to write)
            model[field] = theirs
            provenance[f"model.{field}"] = f"pretrained {init_from}"
            continue
        ours = model[field]
        numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (ours, theirs))
        unset = ours is None or theirs is None  # logit_softcap = 30.0 against weights without a cap
        if type(ours) is not type(theirs) and not numbers and not unset:  # rope_theta = 10000 is 10000.0
            continue  # a wrong type is reported by structuring, not as a disagreement
        if field == "block_size":
            if ours > theirs:
                problems.append(Problem("model.block_size", f"{ours} must not exceed the pretrained model's ({theirs})"))
        elif ours != theirs:
            problems.append(
                Problem(f"model.{field}", f"{show_value(ours)} must equal the pretrained model's "
                                          f"({'unset' if theirs is None else show_value(theirs)}), or be left out")
            )
    return problems


def _tokenizer_fits_pretrained(exp: Experiment) -> list[Problem]:
    """A model from a Hugging Face directory of a type that reads its own tokenizer (a Llama's)
    gives each embedding row the meaning of that tokenizer's id: data tokenized otherwise would
    give the rows other meanings, so it is refused before any work."""
    import hashlib

    model, data = exp.model, exp.data
    init_from, tokenizer = getattr(model, "init_from", "scratch"), getattr(data, "tokenizer", None)
    hf = HF_ARCHS.get(type(model).HF_MODEL_TYPE or "")
    if hf is None or not hf.own_tokenizer or not isinstance(tokenizer, str) or not _is_file(Path(init_from) / "config.json"):
        return []
    own = Path(init_from) / "tokenizer.json"
    if not tokenizer.startswith("hf:"):
        fits = tokenizer == "gpt2" and getattr(model, "vocab_size", None) == 50257 and not _is_file(own)
        if fits:
            return []
        return [Problem("data.tokenizer", f"{tokenizer!r} cannot give the ids model.init_from {init_from!r} was trained on; "
                                          f"use its own tokenizer: data.tokenizer = \"hf:{init_from}\"")]
    named = Path(tokenizer[3:])
    named = named / "tokenizer.json" if named.is_dir() else named
    if not (_is_file(own) and _is_file(named)):
        return []  # a hub tokenizer, or a model without one: checked by the vocabulary sizes at run time
    try:
        same = hashlib.sha256(own.read_bytes()).digest() == hashlib.sha256(named.read_bytes()).digest()
    except OSError:
        return []
    if same:
        return []
    return [Problem("data.tokenizer", f"{tokenizer!r} is not the tokenizer of model.init_from {init_from!r} "
                                      f"(its tokenizer.json differs): the ids would mean other tokens")]


# ----------------------------------------------------------------------- files a spec names


def missing_files(exp: Experiment) -> list[Problem]:
    """Input files the spec names that are not there (outputs are not checked)."""
    data = exp.data
    source = getattr(data, "source", None)
    if source and source.startswith("bin:"):  # other projects' shards, read in place: they must be there
        pattern = source[len("bin:"):]
        return [] if _glob_matches(pattern) else [Problem("data.source", f"no file matches {pattern!r}")]
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
