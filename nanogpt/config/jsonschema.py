"""JSON Schema of experiment specs, generated from the spec classes.

Descriptions come from the attribute docstrings in tables.py, bounds and patterns from the field
validators, and each component table is a `oneOf` over the kinds registered for it (the default
kind may leave `kind` out). `schema/experiment.schema.json` holds the committed output; a test
fails when it is stale.
"""

from __future__ import annotations

import ast
import inspect
import textwrap
import typing
from functools import cache
from typing import Any, Literal, Union

import attrs

from nanogpt.registry import REGISTRIES, Registry
from nanogpt.config.checks import validators_of
from nanogpt.config.convert import converter
from nanogpt.config.tables import Experiment

SCHEMA_ID = "https://github.com/nanogpt/nanogpt/schema/experiment.schema.json"


def experiment_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) a complete spec file satisfies."""
    schema = _class_schema(Experiment, component_kind=None)
    schema["properties"] = {
        "extends": {
            "description": "A path (or array of paths), relative to this file, of specs this one builds on; tables merge recursively, other values replace.",
            "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
        },
        **schema["properties"],
        "sweep": _sweep_schema(),
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "nanogpt experiment spec",
        **schema,
    }


@cache
def attribute_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings: the string literal right after each field of a class body."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0]
        if not isinstance(body, ast.ClassDef):
            continue
        statements = body.body
        for stmt, nxt in zip(statements, statements[1:]):
            target = getattr(stmt, "target", None)
            if (
                isinstance(stmt, ast.AnnAssign)
                and isinstance(target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(getattr(nxt, "value", None), ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _class_schema(cls: type, component_kind: str | None) -> dict[str, Any]:
    cls = attrs.resolve_types(cls)
    docs = attribute_docs(cls)
    properties: dict[str, Any] = {}
    required = []
    for a in attrs.fields(cls):
        if a.name == "kind" and component_kind is not None:
            prop: dict[str, Any] = {"const": component_kind}
        else:
            prop = _type_schema(a.type)
            for v in validators_of(a):
                schema_of = getattr(v, "schema", None)
                if schema_of is not None:
                    prop.update(schema_of())
            if a.default is attrs.NOTHING:
                required.append(a.name)
            elif not isinstance(a.default, attrs.Factory) and a.default is not None:
                prop["default"] = converter.unstructure(a.default)
        if a.name in docs:
            prop = {"description": docs[a.name], **prop}
        properties[a.name] = prop
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__:
        schema = {"description": inspect.cleandoc(cls.__doc__), **schema}
    if required:
        schema["required"] = required
    return schema


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"enum": list(args)}
    if origin is tuple:
        return {"type": "array", "items": _type_schema(args[0])}
    if origin is Union or type(tp).__name__ == "UnionType":
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            # TOML has no null: an optional field is simply left out.
            return _type_schema(inner[0])
    if tp in REGISTRIES:
        return _component_schema(REGISTRIES[tp])
    if attrs.has(tp):
        return _class_schema(tp, component_kind=None)
    raise TypeError(f"no JSON Schema for {tp!r}")


def _component_schema(registry: Registry) -> dict[str, Any]:
    variants = []
    for kind in registry.kinds():
        variant = _class_schema(registry.spec_class(kind), component_kind=kind)
        variant["required"] = [*variant.get("required", []), *([] if kind == registry.default_kind else ["kind"])]
        if not variant["required"]:
            del variant["required"]
        variants.append(variant)
    return {"oneOf": variants}


def _sweep_schema() -> dict[str, Any]:
    """The `[sweep]` table (read by `nanogpt sweep`, refused by `run`): written by hand, as its keys are dotted paths."""
    from nanogpt.config.sweep import Distribution, SweepSpec

    docs = attribute_docs(SweepSpec)
    kinds = "|".join(Distribution.KINDS)
    return {
        "description": inspect.cleandoc(SweepSpec.__doc__ or ""),
        "type": "object",
        "properties": {
            "grid": {"description": docs["grid"], "type": "object", "additionalProperties": {"type": "array", "minItems": 1}},
            "random": {
                "description": docs["random"], "type": "object",
                "additionalProperties": {"type": "string", "pattern": f"^\\s*({kinds})\\s*\\(.*\\)\\s*$"},
            },
            "samples": {"description": docs["samples"], "type": "integer", "minimum": 1},
            "seed": {"description": docs["seed"], "type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }
