"""Command-line words: overrides anywhere among a verb's flags, spec paths that hold '=', and `--`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt.cli import main
from nanogpt.config.load import load_spec
from tests.conftest import REPO

SPEC = 'name = "w"\n[model]\nn_layer = 2\nn_head = 2\nn_embd = 32\nblock_size = 32\nvocab_size = 65\n[data]\ndataset = "x"\n'
OVERRIDE = "model.n_layer=5"

# Where the spec (S), the override (O) and the verb's flags (F) go; argparse alone took O only before F.
ORDERS = {
    "S O F": lambda s, o, f: [s, o, *f],
    "S F O": lambda s, o, f: [s, *f, o],
    "F S O": lambda s, o, f: [*f, s, o],
    "O F S": lambda s, o, f: [o, *f, s],
    "F O S": lambda s, o, f: [*f, o, s],
    "O S F": lambda s, o, f: [o, s, *f],
}


@pytest.fixture
def spec(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "w.toml"
    path.write_text(SPEC, encoding="utf-8")
    return str(path)


def capture(monkeypatch, target: str, result=0) -> list[tuple]:
    """Replace the function a verb hands its parsed words to; returns the list its calls are recorded in."""
    calls: list[tuple] = []

    def record(*args, **kwargs):
        calls.append((args, kwargs))
        return result

    monkeypatch.setattr(target, record)
    return calls


@pytest.mark.parametrize("order", ORDERS)
def test_run_takes_overrides_anywhere(spec, monkeypatch, order):
    """`run SPEC --force k=v` and every other order: the override reaches the spec the runner gets."""
    calls = capture(monkeypatch, "nanogpt.training.runner.run")
    assert main(["run", *ORDERS[order](spec, OVERRIDE, ["--force"])]) == 0
    (exp, origin), kwargs = calls[0]
    assert exp.model.n_layer == 5 and origin.overrides == (OVERRIDE,) and kwargs["resume_dir"] is None and kwargs["force"] is True


@pytest.mark.parametrize("order", ["O F", "F O", "F1 O F2"])
def test_run_resume_takes_overrides_anywhere(spec, monkeypatch, order):
    """`run --resume DIR k=v --force`: the overrides and --force reach the resume, in any order."""
    calls = capture(monkeypatch, "nanogpt.runs.manifest.load_for_resume", result=load_spec(spec))
    capture(monkeypatch, "nanogpt.training.runner.run")
    resume, force = ["--resume", "runs/w/1"], ["--force"]
    words = {"O F": [OVERRIDE, *resume, *force], "F O": [*resume, *force, OVERRIDE], "F1 O F2": [*resume, OVERRIDE, *force]}
    assert main(["run", *words[order]]) == 0
    assert calls == [((Path("runs/w/1"), [OVERRIDE]), {"force": True})]


@pytest.mark.parametrize("order", ["S O", "O S"])
@pytest.mark.parametrize("verb", ["check", "show"])
def test_check_and_show_take_overrides_before_or_after_the_spec(spec, capsys, verb, order):
    """check and show have no flags of their own: the override goes before or after the spec."""
    words = [spec, OVERRIDE] if order == "S O" else [OVERRIDE, spec]
    assert main([verb, *words]) == 0
    out = capsys.readouterr().out
    assert ("n_layer = 5" in out) if verb == "show" else out == f"ok: {spec}\n"
    assert main([verb, *[w.replace("n_layer=5", "n_head=3") for w in words]]) == 2  # the override is applied
    assert "model.n_embd: 32 must be divisible by model.n_head (3)" in capsys.readouterr().err


@pytest.mark.parametrize("order", ORDERS)
def test_prepare_takes_overrides_anywhere(spec, monkeypatch, order):
    """`prepare SPEC --force k=v`: the data table prepared has the override, and --force is seen."""
    calls = capture(monkeypatch, "nanogpt.data.prepare.prepare_command")
    assert main(["prepare", *ORDERS[order](spec, 'data.dataset="y"', ["--force"])]) == 0
    (data,), kwargs = calls[0]
    assert data.dataset == "y" and kwargs == {"force": True, "format": "nanogpt"}


@pytest.mark.parametrize("order", ORDERS)
def test_bench_takes_overrides_anywhere(spec, monkeypatch, order):
    """`bench SPEC --synthetic --steps 3 model.n_layer=1` and every other order."""
    calls = capture(monkeypatch, "nanogpt.perf.bench.bench_command")
    assert main(["bench", *ORDERS[order](spec, OVERRIDE, ["--synthetic", "--steps", "3"])]) == 0
    (path, overrides, args), _ = calls[0]
    assert (path, overrides, args.synthetic, args.steps) == (spec, [OVERRIDE], True, 3)


@pytest.mark.parametrize("order", ORDERS)
def test_sweep_takes_overrides_and_axes_anywhere(spec, monkeypatch, order):
    """`sweep SPEC --jobs 2 k=a,b k=v` and every other order: the axis and the override reach the sweep
    (the sweeps page's example puts them after --jobs; argparse alone refused them there)."""
    calls = capture(monkeypatch, "nanogpt.runs.sweeps.command.sweep_command")
    words = ORDERS[order](spec, OVERRIDE, ["--jobs", "2"])
    assert main(["sweep", *words, "optimizer.lr=1e-3,3e-3"]) == 0
    (paths, overrides, args), _ = calls[0]
    assert (paths, overrides, args.jobs) == ([spec], [OVERRIDE, "optimizer.lr=1e-3,3e-3"], 2)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("what", ["params", "flops"])
def test_scaling_takes_overrides_anywhere(spec, capsys, what, order):
    """`scaling params SPEC --json k=v` and every other order: the figures are the overridden model's."""
    assert main(["scaling", what, *ORDERS[order](spec, OVERRIDE, ["--json"])]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["arch"]["n_layer"] == 5 and report["source"] == spec


def test_a_spec_path_holding_an_equals_sign(tmp_path, monkeypatch, capsys):
    """A path holding '=' (as `run` makes for a run id with one) is a spec when the file exists, and
    always after `--`; a missing one after `--` is reported as a missing spec, not as a bad override."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "runs" / "w" / "lr=1e-3"
    folder.mkdir(parents=True)
    (folder / "spec.toml").write_text(SPEC, encoding="utf-8")
    path = "runs/w/lr=1e-3/spec.toml"
    assert main(["show", path, "train.max_iters=3"]) == 0
    assert "max_iters = 3" in capsys.readouterr().out
    assert main(["check", "--", path]) == 0 and capsys.readouterr().out == f"ok: {path}\n"
    assert main(["scaling", "params", "--json", "--", path]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == path
    assert main(["check", "--", "runs/w/lr=1e-4/spec.toml"]) == 2
    assert capsys.readouterr().err == "runs/w/lr=1e-4/spec.toml: file not found\n"


def test_usage_says_where_overrides_go():
    """Each verb's --help says overrides go anywhere, that an existing file is a spec, and what `--` does."""
    for verb in (["run"], ["check"], ["show"], ["prepare"], ["bench"], ["scaling", "params"], ["scaling", "flops"]):
        done = subprocess.run([sys.executable, "-m", "nanogpt", *verb, "--help"], capture_output=True, text=True, cwd=REPO)
        text = " ".join(done.stdout.split())
        assert done.returncode == 0 and "anywhere among the flags" in text, verb
        assert "names an existing file is a spec" in text and "every word after -- is a spec" in text, verb


def test_the_short_form_takes_overrides_after_flags(spec):
    """`python -m nanogpt.run SPEC --force k=v` (what torchrun launches) parses as `nanogpt run` does."""
    done = subprocess.run([sys.executable, "-m", "nanogpt.run", spec, "--force", "model.n_head=3"],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2 and "unrecognized" not in done.stderr
    assert "model.n_embd: 32 must be divisible by model.n_head (3)" in done.stderr
