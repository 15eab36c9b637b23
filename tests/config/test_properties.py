"""Properties of the spec half over generated specs: round trips, the schema, errors, hashing."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

import attrs
import jsonschema
import pytest
import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt.registry import REGISTRIES
from nanogpt.config.tables import Experiment
from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec, loads_spec
from nanogpt.config.canonical import resolved, spec_sha256, to_toml
from nanogpt.config.tables import TABLES
from tests import strategies as S
from tests.conftest import REPO

FEW = settings(max_examples=20, suppress_health_check=[HealthCheck.too_slow])
SOME = settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def spec_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("specs")


@pytest.fixture(scope="module")
def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((REPO / "schema" / "experiment.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


_counter = itertools.count()


def load_text(directory: Path, text: str, overrides: tuple[str, ...] = ()) -> tuple[Experiment, Any]:
    """Write spec text to a fresh file and load it the way `check` does."""
    path = directory / f"spec{next(_counter)}.toml"
    path.write_text(text, encoding="utf-8")
    return load_spec(path, overrides)


def test_every_registered_kind_has_a_strategy():
    """The strategies cover every kind of every component table, so a new kind cannot go untested."""
    registered = {r.table: set(r.kinds()) for r in REGISTRIES.values()}
    covered = {table: set(kinds) for table, kinds in S.KIND_STRATEGIES.items()}
    assert covered == registered


@SOME
@given(raw=S.specs())
def test_generated_specs_are_valid(spec_dir, raw):
    """Every spec the strategy generates passes validation (the strategy mirrors the validators)."""
    exp, _ = load_text(spec_dir, tomli_w.dumps(raw))
    assert exp.name == raw["name"]
    for table in TABLES:
        for key, value in raw.get(table, {}).items():
            got = getattr(getattr(exp, table), key)
            assert got == (tuple(value) if isinstance(value, list) else value)


@SOME
@given(raw=S.specs())
def test_toml_round_trip(spec_dir, raw):
    """`show`'s TOML of any valid spec loads back to an equal spec, and shows as identical text."""
    exp, _ = load_text(spec_dir, tomli_w.dumps(raw))
    text = to_toml(exp)
    again, _ = load_text(spec_dir, text)
    assert again == exp
    assert to_toml(again) == text
    assert loads_spec(text) == exp  # the resolved form needs no files and no pretrained lookup


@SOME
@given(raw=S.specs())
def test_generated_specs_match_the_committed_schema(spec_dir, schema_validator, raw):
    """Every valid spec, as written and as resolved, satisfies the committed JSON Schema."""
    schema_validator.validate(raw)
    exp, _ = load_text(spec_dir, tomli_w.dumps(raw))
    schema_validator.validate(resolved(exp))


@SOME
@given(case=S.broken_specs())
def test_breaking_one_field_names_its_path(spec_dir, case):
    """A valid spec with one field broken fails, and one of its problems names that field's path."""
    raw, path = case
    with pytest.raises(SpecError) as e:
        load_text(spec_dir, tomli_w.dumps(raw))
    paths = [p.path for p in e.value.problems]
    assert any(p == path or p.startswith(path + "[") for p in paths), (path, e.value.report())


@SOME
@given(doc=S.toml_documents())
def test_arbitrary_documents_raise_only_spec_errors(spec_dir, doc):
    """Any TOML document either validates or raises SpecError with at least one problem line."""
    try:
        text = tomli_w.dumps(doc)
    except (TypeError, ValueError):  # a value TOML cannot write (tomli_w refuses it)
        return
    try:
        load_text(spec_dir, text)
    except SpecError as e:
        assert e.problems and str(e).startswith(e.source)
    try:
        loads_spec(text)
    except SpecError as e:
        assert e.problems


@FEW
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_raises_only_spec_errors(spec_dir, text):
    """Text that is not TOML (or is TOML but no spec) gives SpecError, never another exception."""
    try:
        loads_spec(text)
    except SpecError as e:
        assert e.problems


@FEW
@given(data=st.binary(max_size=200))
def test_arbitrary_bytes_in_a_file_raise_only_spec_errors(spec_dir, data):
    """A file of arbitrary bytes (not UTF-8, NULs, half a TOML) gives SpecError, never another exception."""
    path = spec_dir / f"bytes{next(_counter)}.toml"
    path.write_bytes(data)
    try:
        load_spec(path)
    except SpecError as e:
        assert e.problems


@SOME
@given(raw=S.specs(), words=st.lists(S.override_words(), max_size=3))
def test_arbitrary_overrides_raise_only_spec_errors(spec_dir, raw, words):
    """Any override words on a valid spec either validate or raise SpecError."""
    try:
        exp, origin = load_text(spec_dir, tomli_w.dumps(raw), tuple(words))
    except SpecError as e:
        assert e.problems
    else:
        assert origin.overrides == tuple(words)


# ------------------------------------------------------------------- spec_sha256 invariance


def _float_paths(data: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in data.items():
        if isinstance(value, dict):
            paths |= _float_paths(value, f"{prefix}{key}.")
        elif isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            paths.add(prefix + key)
    return paths


@st.composite
def restated(draw, raw: dict[str, Any], exp: Experiment) -> dict[str, Any]:
    """The same spec said differently: defaults spelled out or left out, floats spelled as ints or not."""
    full = resolved(exp)
    floats = _float_paths(full)
    component_kinds = {r.table: r.default_kind for r in REGISTRIES.values()}
    out: dict[str, Any] = {}
    for key, value in full.items():
        if not isinstance(value, dict):
            if key == "name" or not _is_default(Experiment, key, value) or draw(st.booleans()):
                out[key] = _respell(draw, value, key in floats)
            continue
        cls = type(getattr(exp, key))
        stated = raw.get(key, {})
        table = {}
        for k, v in value.items():
            if k == "kind":
                needed = v != component_kinds[key]
            else:
                # Left out, a field takes its default (or the pretrained model's value, the same
                # value again): either way stating it changes nothing.
                needed = k in stated and not _is_default(cls, k, v)
            if needed or draw(st.booleans()):
                table[k] = _respell(draw, v, f"{key}.{k}" in floats)
        if table or draw(st.booleans()):
            out[key] = table
    return out


def _is_default(cls: type, name: str, value: Any) -> bool:
    default = attrs.fields_dict(cls)[name].default
    if isinstance(default, attrs.Factory):
        default = default.factory()
    return value == (list(default) if isinstance(default, tuple) else default)


def _respell(draw, value: Any, is_float: bool) -> Any:
    if isinstance(value, list):
        return [_respell(draw, v, is_float) for v in value]
    if is_float and isinstance(value, (int, float)) and not isinstance(value, bool):
        x = float(value)
        if x.is_integer() and abs(x) <= 2**53 and draw(st.booleans()):
            return int(x)
        return x
    return value


@st.composite
def toml_texts(draw, data: dict[str, Any]) -> str:
    """`data` written as TOML in one of many legal ways: key order, table styles, comments, spacing."""
    comment = lambda: draw(st.sampled_from(["", "", "# a comment", "#", "# [model] n_layer = 1"]))
    eq = lambda: draw(st.sampled_from([" = ", "=", "  =   ", "\t=\t"]))

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return draw(st.sampled_from([str(v), f"{v:_}"]))
        if isinstance(v, float):
            text = repr(v)
            return draw(st.sampled_from([text, text.replace("e", "E")]))
        if isinstance(v, str) and v.isprintable() and "'" not in v and draw(st.booleans()):
            return f"'{v}'"
        if isinstance(v, list):
            items = [value(x) for x in v]
            if draw(st.booleans()):
                return "[\n" + "".join(f"    {x},  {('# ' + str(i)) if i else ''}\n" for i, x in enumerate(items)) + "]"
            return "[" + ", ".join(items) + "]"
        return S.toml_inline(v)

    def pairs(table: dict[str, Any], prefix: str = "") -> list[str]:
        keys = draw(st.permutations(list(table)))
        lines = []
        for k in keys:
            line = f"{prefix}{S.toml_key(k)}{eq()}{value(table[k])}"
            c = comment()
            lines.append(f"{line}  {c}" if c else line)
            if draw(st.booleans()):
                lines.append(draw(st.sampled_from(["", "   ", "# between keys"])))
        return lines

    scalars = {k: v for k, v in data.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    head: list[str] = [comment()]
    body: list[str] = []
    top_keys = draw(st.permutations(list(scalars) + list(tables)))
    for k in top_keys:
        if k in scalars:
            head += pairs({k: scalars[k]})
            continue
        style = draw(st.sampled_from(["standard", "inline", "dotted"]))
        if style == "inline":
            head.append(f"{S.toml_key(k)}{eq()}{S.toml_inline(tables[k])}")
        elif style == "dotted":
            head += pairs(tables[k], prefix=S.toml_key(k) + ".")
        else:
            body += ["", draw(st.sampled_from([f"[{S.toml_key(k)}]", f"[ {S.toml_key(k)} ]", f"[{S.toml_key(k)}]  # table"]))]
            body += pairs(tables[k])
    return "\n".join(head + body) + "\n"


@SOME
@given(data=st.data())
def test_spec_sha256_ignores_formatting(spec_dir, data):
    """Whitespace, comments, table styles, key order, int-vs-float spelling and stated defaults leave spec_sha256 alone."""
    raw = data.draw(S.specs(), label="raw")
    exp, _ = load_text(spec_dir, tomli_w.dumps(raw))
    variant = data.draw(restated(raw, exp), label="variant")
    text = data.draw(toml_texts(variant), label="text")
    again, _ = load_text(spec_dir, text)
    assert again == exp
    assert spec_sha256(again) == spec_sha256(exp)


@FEW
@given(raw=S.specs())
def test_spec_sha256_tells_specs_apart(spec_dir, raw):
    """Changing one value changes spec_sha256 (it hashes the values, not just the keys)."""
    exp, _ = load_text(spec_dir, tomli_w.dumps(raw))
    changed = attrs.evolve(exp, seed=(exp.seed + 1) % 2**63)
    assert spec_sha256(changed) != spec_sha256(exp)
    assert len(spec_sha256(exp)) == 64 and all(c in "0123456789abcdef" for c in spec_sha256(exp))


def test_negative_zero_hashes_like_zero(tmp_path):
    """`-0.0` and `0` are the same weight decay, so they give the same spec and hash."""
    a, _ = load_text(tmp_path, 'name = "z"\n[optimizer]\nweight_decay = -0.0\n')
    b, _ = load_text(tmp_path, 'name = "z"\n[optimizer]\nweight_decay = 0\n')
    assert a == b and spec_sha256(a) == spec_sha256(b)
    assert math.copysign(1.0, a.optimizer.weight_decay) == 1.0
