"""Overrides (`dotted.path=value` words) and provenance: where each value of a loaded spec came from."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanogpt.config.problems import SpecError
from nanogpt.config.load import load_spec, loads_spec
from nanogpt.config.load import DEFAULT, parse_override_value
from tests import strategies as S

BASE = 'name = "o"\n[optimizer]\nlr = 1e-3\n[train]\nmax_iters = 50\n'


@pytest.fixture
def spec(tmp_path, monkeypatch) -> str:
    """A small spec file in a fresh working directory."""
    monkeypatch.chdir(tmp_path)
    Path("o.toml").write_text(BASE, encoding="utf-8")
    return "o.toml"


def test_values_are_read_as_toml(spec):
    """Arrays, booleans, integers and floats in overrides are TOML values, not strings."""
    exp, _ = load_spec(
        spec, ["optimizer.betas=[0.9,0.99]", "system.compile=false", "train.max_iters=100", "optimizer.lr=3e-4"]
    )
    assert exp.optimizer.betas == (0.9, 0.99)
    assert exp.system.compile is False
    assert exp.train.max_iters == 100
    assert exp.optimizer.lr == 3e-4


def test_a_value_that_is_not_toml_is_a_string(spec):
    """A bare word is taken as a string, so `data.dataset=shakespeare_char` needs no quotes."""
    exp, _ = load_spec(spec, ["data.dataset=shakespeare_char", 'data.tokenizer="char"'])
    assert exp.data.dataset == "shakespeare_char"
    assert exp.data.tokenizer == "char"


@settings(max_examples=40)
@given(value=st.one_of(S.toml_scalars, st.lists(st.integers(), max_size=3)))
def test_parse_override_value_reads_what_toml_writes(value):
    """Any TOML value written inline reads back as itself (nan compared as nan)."""
    got = parse_override_value(S.toml_inline(value))
    assert got == value or (got != got and value != value)


@settings(max_examples=40)
@given(text=st.text(max_size=20))
def test_parse_override_value_never_fails(text):
    """Whatever follows '=' becomes a value: the text itself, or a TOML value that reads back as itself."""
    got = parse_override_value(text)
    if got != text and got == got:  # nan is the one value unequal to itself
        assert parse_override_value(S.toml_inline(got)) == got


def test_last_override_wins(spec):
    """A key given twice takes its last value, and the origin keeps both words as given."""
    exp, origin = load_spec(spec, ["train.max_iters=10", "train.max_iters=20"])
    assert exp.train.max_iters == 20
    assert origin.overrides == ("train.max_iters=10", "train.max_iters=20")
    assert origin.source_of("train.max_iters") == "override train.max_iters=20"


def test_override_beats_the_file_and_its_bases(spec):
    """An override replaces a value the spec file states."""
    exp, _ = load_spec(spec, ["optimizer.lr=0.01"])
    assert exp.optimizer.lr == 0.01


def test_override_of_kind_starts_from_that_kinds_defaults(spec):
    """Switching a component's kind by override drops the old kind's fields rather than failing on them."""
    exp, origin = load_spec(spec, ["optimizer.kind=sgd", "optimizer.momentum=0.5"])
    assert exp.optimizer.kind == "sgd" and exp.optimizer.lr == 0.1 and exp.optimizer.momentum == 0.5
    assert origin.source_of("optimizer.lr") == DEFAULT


def test_override_of_the_same_kind_keeps_the_table(spec):
    """Restating the current kind changes nothing."""
    exp, _ = load_spec(spec, ["optimizer.kind=adamw"])
    assert exp.optimizer.lr == 1e-3


def test_inline_table_override(spec):
    """A table can be given whole as an inline table; it merges nothing, it replaces."""
    exp, origin = load_spec(spec, ["schedule.min_lr=0", "schedule={kind='constant', warmup_iters=5}"])
    assert exp.schedule.kind == "constant" and exp.schedule.warmup_iters == 5
    assert origin.source_of("schedule.warmup_iters") == "override schedule={kind='constant', warmup_iters=5}"


def test_nothing_after_the_equals_sign_restores_the_default(spec):
    """`key=` unsets a key (TOML has no null): the spec is then the one that never set it, its
    provenance the default; `table.kind=` goes back to the default kind and its defaults."""
    exp, origin = load_spec(spec, ["optimizer.lr=", "logging.run_id=mine", "logging.run_id=", "system.peak_tflops="])
    Path("without_lr.toml").write_text('name = "o"\n[train]\nmax_iters = 50\n', encoding="utf-8")
    assert exp == load_spec("without_lr.toml")[0]
    assert exp.logging.run_id is None and exp.system.peak_tflops is None
    assert origin.source_of("optimizer.lr") == DEFAULT and origin.source_of("logging.run_id") == DEFAULT
    exp, origin = load_spec(spec, ["optimizer.kind=sgd", "optimizer.momentum=0.5", "optimizer.kind="])
    assert exp.optimizer.kind == "adamw" and exp.optimizer.lr == 6e-4
    assert origin.source_of("optimizer.lr") == DEFAULT
    with pytest.raises(SpecError) as e:
        load_spec(spec, ["train.max_iters.x="])
    assert e.value.problems[0].message == "override 'train.max_iters.x=': train.max_iters is not a table"


def test_unknown_key_in_override_is_an_error(spec):
    """An override of a key no table has fails like a typo in the file."""
    with pytest.raises(SpecError) as e:
        load_spec(spec, ["optimizer.learning_rate=1"])
    assert [p.path for p in e.value.problems] == ["optimizer.learning_rate"]
    assert "(override optimizer.learning_rate=1)" in e.value.report()


def test_overrides_apply_to_text_specs():
    """loads_spec takes overrides too (what `run --resume` applies to a saved spec)."""
    exp = loads_spec('name = "t"\n', overrides=["seed=3"])
    assert exp.seed == 3


def test_provenance_records_file_base_override_pretrained_and_default(tmp_path, monkeypatch):
    """Each value's origin is the file, base, override or pretrained model that set it, or the default."""
    monkeypatch.chdir(tmp_path)
    Path("base.toml").write_text("[train]\nbatch_size = 4\neval_iters = 3\n", encoding="utf-8")
    Path("s.toml").write_text(
        'name = "p"\nextends = "base.toml"\n[model]\ninit_from = "gpt2"\nblock_size = 256\n[train]\neval_iters = 5\n',
        encoding="utf-8",
    )
    exp, origin = load_spec("s.toml", ["train.max_iters=7"])
    assert origin.path == "s.toml"
    assert origin.files == ("s.toml", "base.toml")
    assert origin.source_of("name") == "s.toml"
    assert origin.source_of("model.block_size") == "s.toml"
    assert origin.source_of("train.batch_size") == "base.toml"
    assert origin.source_of("train.eval_iters") == "s.toml"
    assert origin.source_of("train.max_iters") == "override train.max_iters=7"
    assert origin.source_of("model.n_layer") == "pretrained gpt2"
    assert origin.source_of("optimizer.lr") == DEFAULT
    assert "extends" not in origin.provenance
    assert (exp.model.n_layer, exp.model.block_size, exp.train.batch_size) == (12, 256, 4)
