"""Sweeps, the spec half: axes parsed like overrides, grid and seeded random expansion, the [sweep]
table's checks, and every member validated before anything starts. No process is started here."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanogpt.cli import main
from nanogpt.config.problems import SpecError
from nanogpt.config.load import parse_override_value, read_spec, resolve_spec
from nanogpt.config.sweep import Distribution, axis_of, plan_sweep, split_values
from tests.strategies import toml_inline, toml_values
from tests.tinyrun import REPO, tiny_spec


def _same(a, b) -> bool:
    """Equal as TOML values (NaN equals NaN: it is the same value written twice)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


# ------------------------------------------------------------------------------------ axes


@given(toml_values)
def test_one_toml_value_is_never_an_axis(value):
    """Any one TOML value (arrays, inline tables, strings full of commas and quotes) is a plain override, not an axis."""
    word = f"optimizer.betas={toml_inline(value)}"
    assert axis_of(word) is None
    assert _same(parse_override_value(toml_inline(value)), value)


@given(st.lists(toml_values, min_size=2, max_size=5))
def test_comma_separated_toml_values_are_an_axis_of_those_values(values):
    """`key=v1,v2,...` is an axis whose values are exactly v1, v2, ... even when they hold commas themselves."""
    axis = axis_of("a.b=" + ",".join(toml_inline(v) for v in values))
    assert axis is not None and axis.key == "a.b"
    assert _same(list(axis.values), values)


_bare = st.text(st.characters(blacklist_characters="\"'[]{},=", blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(str.strip)


@given(st.lists(_bare, min_size=2, max_size=4))
def test_each_piece_of_an_axis_reads_as_an_override_value(pieces):
    """Each piece of an axis is read exactly as an override's value is: TOML when it parses, else a string."""
    axis = axis_of("data.dataset=" + ",".join(pieces))
    assert axis is not None
    assert _same(list(axis.values), [parse_override_value(p.strip()) for p in pieces])


def test_axis_examples():
    """The contract's examples: commas in brackets and quotes do not split; bare words become strings."""
    assert axis_of("optimizer.lr=1e-3,3e-4,1e-4").values == (1e-3, 3e-4, 1e-4)
    assert axis_of("optimizer.betas=[0.9,0.99]") is None
    assert axis_of("optimizer.betas=[0.9,0.99],[0.9,0.95]").values == ([0.9, 0.99], [0.9, 0.95])
    assert axis_of('description="a, b"') is None
    assert axis_of("data.dataset=shakespeare_char,owt").values == ("shakespeare_char", "owt")
    assert split_values(r'"a\",b",c') == [r'"a\",b"', "c"]  # an escaped quote does not end the string
    assert split_values("'a\\',b") == ["'a\\'", "b"]  # a literal string has no escapes
    with pytest.raises(ValueError, match="a value between every two commas"):
        axis_of("optimizer.lr=1e-3,")


# ---------------------------------------------------------------------------- expansion


def test_grid_is_in_order_first_axis_slowest_and_plain_overrides_reach_every_member(tmp_path):
    """Axes form a grid in the order given, the first slowest; a plain override applies to every member, in its place."""
    tree = read_spec(tiny_spec(tmp_path))
    words = ["optimizer.lr=1e-3,3e-3", "model.n_layer=1,2,3", "train.max_iters=7"]
    members = plan_sweep(tree.sweep, words, tree.source).members()
    assert [(m.values["optimizer.lr"], m.values["model.n_layer"]) for m in members] == [
        (1e-3, 1), (1e-3, 2), (1e-3, 3), (3e-3, 1), (3e-3, 2), (3e-3, 3)
    ]
    assert [m.index for m in members] == list(range(6))
    assert members[4].overrides == ("optimizer.lr=0.003", "model.n_layer=2", "train.max_iters=7")
    exp, _ = resolve_spec(tree, members[4].overrides, sweep_member=True)
    assert (exp.optimizer.lr, exp.model.n_layer, exp.train.max_iters) == (3e-3, 2, 7)


def test_member_words_keep_the_command_lines_order(tmp_path):
    """An axis over a table's kind, then a field of that table: the field survives the kind change, as with overrides."""
    tree = read_spec(tiny_spec(tmp_path))
    members = plan_sweep(tree.sweep, ["optimizer.kind=sgd,adamw", "optimizer.lr=0.01"], tree.source).members()
    for m in members:
        exp, _ = resolve_spec(tree, m.overrides, sweep_member=True)
        assert exp.optimizer.kind == m.values["optimizer.kind"] and exp.optimizer.lr == 0.01


def test_last_word_for_a_key_wins(tmp_path):
    """As with overrides, the last word for a key wins: a later plain value cancels an axis, a later axis replaces one."""
    tree = read_spec(tiny_spec(tmp_path))
    assert len(plan_sweep(tree.sweep, ["optimizer.lr=1e-3,3e-3", "optimizer.lr=0.01"], tree.source).members()) == 1
    members = plan_sweep(tree.sweep, ["optimizer.lr=1e-3,3e-3", "optimizer.lr=1,2,3"], tree.source).members()
    assert [m.values for m in members] == [{"optimizer.lr": 1}, {"optimizer.lr": 2}, {"optimizer.lr": 3}]


SWEEP_TABLE = """
[sweep]
grid = { "model.n_layer" = [1, 2] }
random = { "optimizer.weight_decay" = "loguniform(1e-3, 1e-1)", "train.batch_size" = "randint(2, 5)", "optimizer.betas" = "choice([0.9, 0.99], [0.9, 0.95])" }
samples = 3
seed = 11
"""


def test_random_draws_are_a_pure_function_of_the_seed_crossed_with_the_grid(tmp_path):
    """The same seed draws the same members (another process too); another seed others; each grid point gets every draw."""
    spec = tiny_spec(tmp_path)
    spec.write_text(spec.read_text() + SWEEP_TABLE)
    tree = read_spec(spec)
    members = plan_sweep(tree.sweep, [], tree.source).members()
    assert len(members) == 2 * 3
    assert [m.values["model.n_layer"] for m in members] == [1, 1, 1, 2, 2, 2]
    draws = [{k: v for k, v in m.values.items() if k != "model.n_layer"} for m in members]
    assert draws[:3] == draws[3:] and len({json.dumps(d) for d in draws[:3]}) == 3
    for d in draws:
        assert 1e-3 <= d["optimizer.weight_decay"] <= 1e-1
        assert d["train.batch_size"] in (2, 3, 4, 5) and isinstance(d["train.batch_size"], int)
        assert d["optimizer.betas"] in ([0.9, 0.99], [0.9, 0.95])
    again = subprocess.run(
        [sys.executable, "-m", "nanogpt", "sweep", str(spec), "--list"], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout.splitlines()
    assert again == [f"{m.index}  {m.label()}" for m in members]
    other = plan_sweep(tree.sweep, ["sweep.seed=12"], tree.source).members()
    assert [m.values for m in other] != [m.values for m in members]
    for m in members:
        resolve_spec(tree, m.overrides, sweep_member=True)  # every draw is a valid spec


@given(st.integers(0, 2**32), st.floats(-1e6, 1e6), st.floats(1e-6, 1e6), st.integers(-50, 50), st.integers(0, 50))
def test_draws_stay_within_their_distribution(seed, lo, width, ilo, iwidth):
    """uniform, loguniform and randint draw within [a, b] (randint's b included), for any seed."""
    import random

    rng = random.Random(seed)
    hi = lo + width
    assert lo <= Distribution.parse(f"uniform({lo!r}, {hi!r})").draw(rng) <= hi
    a, b = width, width * 10
    assert a * (1 - 1e-12) <= Distribution.parse(f"loguniform({a!r}, {b!r})").draw(rng) <= b * (1 + 1e-12)
    n = Distribution.parse(f"randint({ilo}, {ilo + iwidth})").draw(rng)
    assert isinstance(n, int) and ilo <= n <= ilo + iwidth


# --------------------------------------------------------------------- the [sweep] table


def test_sweep_table_problems_are_reported_together(tmp_path, capsys):
    """Every problem of a [sweep] table is named under sweep.*, exit 2, and nothing is written."""
    spec = tiny_spec(tmp_path)
    spec.write_text(spec.read_text() + """
[sweep]
grid = { "optimizer.lr" = 1e-3 }
random = { "optimizer.weight_decay" = "lognormal(0, 1)", "seed" = "uniform(2, 1)" }
sampels = 4
""")
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert 'sweep.grid."optimizer.lr": must be a non-empty array of values (got 0.001)' in err
    assert "sweep.random.\"optimizer.weight_decay\": unknown distribution 'lognormal' (did you mean 'loguniform'?)" in err
    assert "sweep.random.seed: uniform(2, 1): uniform needs a < b" in err
    assert "sweep.sampels: unknown key (did you mean 'samples'?)" in err
    assert "sweep.samples: is required with sweep.random" in err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("verb", ["run", "check", "show"])
def test_run_refuses_a_spec_with_a_sweep_table(tmp_path, capsys, verb):
    """`run` (and check, show) refuse a spec with a [sweep] table: exit 2, naming `sweep`, nothing written."""
    spec = tiny_spec(tmp_path)
    spec.write_text(spec.read_text() + '\n[sweep]\ngrid = { "optimizer.lr" = [1e-3, 3e-3] }\n')
    assert main([verb, str(spec)]) == 2
    err = capsys.readouterr().err
    assert "  sweep: a [sweep] table makes this spec a family of runs: launch them with `nanogpt sweep SPEC`" in err
    assert not (tmp_path / "runs").exists()


# ---------------------------------------------------------------------------- validation


def test_every_member_is_validated_before_any_starts(tmp_path, capsys):
    """One bad member stops the sweep before anything starts: exit 2, its values named, no run dir, no sweep dir."""
    spec = tiny_spec(tmp_path)
    assert main(["sweep", str(spec), "optimizer.lr=1e-3,3e-3", "model.n_head=2,3", "model.n_embd=32"]) == 2
    err = capsys.readouterr().err
    assert "2 of 4 sweep members are invalid; none was started" in err
    assert "members 1, 3 (1: optimizer.lr=0.001 model.n_head=3; 3: optimizer.lr=0.003 model.n_head=3):" in err
    assert "    model.n_embd: 32 must be divisible by model.n_head (3) (override model.n_embd=32)" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def test_a_problem_of_every_member_is_said_once(tmp_path, capsys):
    """A typo every member shares is reported once, for every member."""
    assert main(["sweep", str(tiny_spec(tmp_path)), "optimizer.lr=1e-3,3e-3", "optimizer.betaz=[0.9,0.9]", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "  every member:\n    optimizer.betaz: unknown key (did you mean 'betas'?)" in err


def test_members_may_not_name_their_run_ids_or_split_the_output_folder(tmp_path, capsys):
    """A sweep names its members' runs, and keeps them in one out_dir (where its sweep dir is)."""
    spec = tiny_spec(tmp_path)
    assert main(["sweep", str(spec), "optimizer.lr=1e-3,3e-3", "logging.run_id=x", "--dry-run"]) == 2
    assert "logging.run_id: must be left out in a sweep" in capsys.readouterr().err
    assert main(["sweep", str(spec), f"logging.out_dir={tmp_path}/a,{tmp_path}/b", "--dry-run"]) == 2
    assert "logging.out_dir: must be the same for every member" in capsys.readouterr().err


def test_list_and_dry_run(tmp_path, capsys):
    """--list prints one member a line (index, then key=value words); --dry-run validates and starts nothing."""
    spec = tiny_spec(tmp_path)
    assert main(["sweep", str(spec), "optimizer.lr=1e-3,3e-3", 'data.dataset="a,b",tiny_char', "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        '0  optimizer.lr=0.001 data.dataset="a,b"', "1  optimizer.lr=0.001 data.dataset=\"tiny_char\"",
        '2  optimizer.lr=0.003 data.dataset="a,b"', "3  optimizer.lr=0.003 data.dataset=\"tiny_char\"",
    ]
    assert main(["sweep", str(spec), "optimizer.lr=1e-3,3e-3", "--dry-run"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"ok: 2 members of {spec} are valid (nothing was started)"
    assert not (tmp_path / "runs").exists()


def test_a_thousand_member_grid_expands_and_validates_without_torch(tmp_path):
    """Expanding and validating 1,000 members never imports torch (its time is in benchmarks/README.md)."""
    spec = tiny_spec(tmp_path)
    axes = ["optimizer.lr=" + ",".join(f"{i}e-3" for i in range(1, 11)), "model.n_layer=" + ",".join(map(str, range(1, 11))),
            "seed=" + ",".join(map(str, range(10)))]
    code = (
        "import sys\nfrom nanogpt.cli import main\n"
        f"code = main(['sweep', {str(spec)!r}, *{axes!r}, '--dry-run'])\n"
        "assert code == 0, code\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == f"ok: 1000 members of {spec} are valid (nothing was started)"


def test_sweep_overrides_change_the_table(tmp_path):
    """`sweep.samples=N` and `sweep.grid."key"=[...]` words change the spec's [sweep] table for this command."""
    spec = tiny_spec(tmp_path)
    spec.write_text(spec.read_text() + SWEEP_TABLE)
    tree = read_spec(spec)
    plan = plan_sweep(tree.sweep, ["sweep.samples=1", 'sweep.grid."model.n_layer"=[3]'], tree.source)
    assert [m.values["model.n_layer"] for m in plan.members()] == [3]
    with pytest.raises(SpecError, match="sweep.samples: must be an integer >= 1"):
        plan_sweep(tree.sweep, ["sweep.samples=0"], tree.source)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loguniform_is_uniform_in_the_log(seed):
    """A seeded Kolmogorov-Smirnov test: the logs of 4,000 loguniform(1e-4, 1e-1) draws are uniform on
    [log 1e-4, log 1e-1] (D below 1.95/sqrt(n), alpha 0.001); a uniform draw on [a, b] gives D near 0.6."""
    import math
    import random

    rng = random.Random(seed)
    a, b, n = 1e-4, 1e-1, 4000
    distribution = Distribution.parse(f"loguniform({a!r}, {b!r})")
    positions = sorted((math.log(distribution.draw(rng)) - math.log(a)) / (math.log(b) - math.log(a)) for _ in range(n))
    d = max(max((i + 1) / n - u, u - i / n) for i, u in enumerate(positions))
    assert d < 1.95 / math.sqrt(n), d
