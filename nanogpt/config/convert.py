"""Raw TOML dicts <-> spec classes, through one cattrs converter.

Structuring is strict (TOML's types must match: no "12" for an int, no 1.5 for an int, no 1 for
a bool), forbids unknown keys, and picks each component table's class by its `kind` through the
registry. Every problem is collected: each field of a table is structured and validated on its
own, and a table's `cross_checks` run once its fields are sound, so one pass reports everything.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Any, Literal, Union

import attrs
import cattrs

from nanogpt.registry import REGISTRIES, Registry
from nanogpt.config.checks import ItemError
from nanogpt.config.problems import Problem, did_you_mean, show_value
from nanogpt.config.tables import Experiment


class _Problems(Exception):
    """Problems found while structuring one value; paths are relative to that value."""

    def __init__(self, problems: list[Problem]):
        super().__init__(problems)
        self.problems = problems


def _mismatch(message: str) -> _Problems:
    return _Problems([Problem("", message)])


def _join(path: str, key: str) -> str:
    if not key:
        return path
    if not path:
        return key
    return f"{path}{key}" if key.startswith("[") else f"{path}.{key}"


def _under(prefix: str, problems: list[Problem]) -> list[Problem]:
    return [Problem(_join(prefix, p.path), p.message) for p in problems]


def _type_name(tp: Any) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}[tp]


INT64 = range(-(2**63), 2**63)
"""TOML's integers: a parser may accept more, but Taplo and every other tool would not."""


def _strict(tp: type):
    def structure(value: Any, _: Any) -> Any:
        if tp in (int, float) and isinstance(value, int) and not isinstance(value, bool):
            if value not in INT64:
                raise _mismatch(f"must fit in 64 bits, as TOML integers do (got {show_value(value)})")
            if tp is float:
                return float(value)
        if not isinstance(value, tp) or (tp is not bool and isinstance(value, bool)):
            raise _mismatch(f"must be {_type_name(tp)} (got {show_value(value)})")
        if tp is float and not math.isfinite(value):
            raise _mismatch(f"must be a finite number (got {show_value(value)})")
        if tp is float:
            return value + 0.0  # -0.0 -> 0.0: "-0.0" and "0" must hash alike
        return value

    return structure


def _structure_literal(value: Any, tp: Any) -> Any:
    choices = typing.get_args(tp)
    if not any(value == c and type(value) is type(c) for c in choices):
        raise _mismatch(
            f"must be one of {', '.join(show_value(c) for c in choices)} (got {show_value(value)})"
        )
    return value


def _structure_tuple(value: Any, tp: Any) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise _mismatch(f"must be an array (got {show_value(value)})")
    item_type = typing.get_args(tp)[0]
    problems, items = [], []
    for i, item in enumerate(value):
        try:
            items.append(converter.structure(item, item_type))
        except _Problems as e:
            problems += _under(f"[{i}]", e.problems)
    if problems:
        raise _Problems(problems)
    return tuple(items)


def _is_optional(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) in (Union, types.UnionType) and len(args) == 2 and type(None) in args


def _structure_optional(value: Any, tp: Any) -> Any:
    (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
    return converter.structure(value, inner)


def _structure_component(value: Any, base: type) -> Any:
    """A component table: its class is the one registered for its `kind`."""
    registry: Registry = REGISTRIES[base]
    if not isinstance(value, dict):
        raise _mismatch(f"must be a table (got {show_value(value)})")
    kind = value.get("kind", registry.default_kind)
    cls = registry.spec_class(kind) if isinstance(kind, str) else None
    if cls is None:
        kinds = registry.kinds()
        problems = [Problem("kind", f"unknown kind {show_value(kind)} (known: {', '.join(kinds)})")]
        # Whatever kind was meant, a key that no kind has is a typo worth reporting now.
        fields = sorted({a.name for k in kinds for a in attrs.fields(registry.spec_class(k))})
        problems += _unknown_keys(value, fields)
        raise _Problems(problems)
    return converter.structure(value, cls)


MAX_SUGGESTIONS = 100
"""Unknown keys of one table beyond which none gets a "did you mean": that many are no typos, and
guessing for each of 20,000 keys took most of a second."""


def _unknown_keys(table: dict[str, Any], known: list[str]) -> list[Problem]:
    unknown = [key for key in table if key not in known]
    if len(unknown) > MAX_SUGGESTIONS:
        return [Problem(key, "unknown key") for key in unknown]
    return [Problem(key, "unknown key" + did_you_mean(key, known)) for key in unknown]


def _structure_attrs(value: Any, cls: type) -> Any:
    """One table: each field structured and validated on its own, so every problem is found."""
    if not isinstance(value, dict):
        raise _mismatch(f"must be a table (got {show_value(value)})")
    fields = attrs.fields(attrs.resolve_types(cls))
    problems: list[Problem] = []
    kwargs: dict[str, Any] = {}
    for a in fields:
        if a.name not in value:
            if a.default is attrs.NOTHING:
                problems.append(Problem(a.name, "is required"))
            continue
        try:
            kwargs[a.name] = converter.structure(value[a.name], a.type)
        except _Problems as e:
            problems += _under(a.name, e.problems)
            continue
        if a.validator is not None:
            try:
                a.validator(None, a, kwargs[a.name])
            except ItemError as e:
                problems.append(Problem(f"{a.name}[{e.index}]", str(e)))
            except (ValueError, TypeError) as e:
                problems.append(Problem(a.name, str(e)))
    problems += _unknown_keys(value, [a.name for a in fields])
    if problems:
        raise _Problems(problems)
    with attrs.validators.disabled():  # they ran above, one by one
        obj = cls(**kwargs)
    problems = list(getattr(obj, "cross_checks", lambda: ())())
    if problems:
        raise _Problems(problems)
    return obj


converter = cattrs.Converter()
for _tp in (int, float, bool, str):
    converter.register_structure_hook(_tp, _strict(_tp))
converter.register_structure_hook_func(lambda tp: typing.get_origin(tp) is Literal, _structure_literal)
converter.register_structure_hook_func(lambda tp: typing.get_origin(tp) is tuple, _structure_tuple)
converter.register_structure_hook_func(_is_optional, _structure_optional)
converter.register_structure_hook_func(lambda tp: tp in REGISTRIES, _structure_component)
converter.register_structure_hook_func(
    lambda tp: attrs.has(tp) and tp not in REGISTRIES, _structure_attrs
)
converter.register_unstructure_hook_func(
    lambda tp: typing.get_origin(tp) is tuple or tp is tuple, lambda v: list(v)
)
converter.register_unstructure_hook_func(
    lambda tp: tp in REGISTRIES, lambda v: converter.unstructure(v, type(v))
)


def structure(raw: dict[str, Any]) -> tuple[Experiment | None, list[Problem]]:
    """A raw (merged, overridden) spec dict -> an Experiment, or None with every problem found."""
    try:
        return converter.structure(raw, Experiment), []
    except _Problems as e:
        return None, e.problems


def unstructure(exp: Experiment) -> dict[str, Any]:
    """An Experiment -> plain TOML-ready data: every field spelled out, None left out."""
    return _drop_none(converter.unstructure(exp))


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_drop_none(v) for v in value]
    return value
