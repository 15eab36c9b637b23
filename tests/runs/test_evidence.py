"""`compare`'s replicates and verdicts on runs written here (manifests and metrics.jsonl, no
training): grouping by configuration, the verdict's words, matched steps, the target's
interpolation, and refusals of runs that were evaluated differently."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanogpt.cli import main
from nanogpt.config.canonical import resolved
from nanogpt.config.load import load_spec
from nanogpt.runs import stats
from nanogpt.runs.evidence import first_reach
from tests.tinyrun import tiny_spec

VAL = {"path": "val.bin", "tokens": 3596, "sha256": "a" * 64}
TRAIN = {"path": "train.bin", "tokens": 32357, "sha256": "b" * 64}


@pytest.fixture
def spec(tmp_path) -> dict[str, Any]:
    exp, _ = load_spec(tiny_spec(tmp_path), check_files=False)
    return resolved(exp)


def write_run(out: Path, spec: dict[str, Any], run_id: str, curve: dict[int, float], *, seed: int = 1, lr: float = 3e-3,
              val: dict[str, Any] | None = None, train: dict[str, Any] | None = None, **spec_changes: Any) -> Path:
    """A run as the runner leaves one: the manifest (spec, data, metrics) and the evaluations in metrics.jsonl."""
    spec = json.loads(json.dumps(spec))
    spec["seed"], spec["optimizer"]["lr"] = seed, lr
    for dotted, value in spec_changes.items():
        table, key = dotted.split("__")
        spec[table][key] = value
    run = out / spec["name"] / run_id
    run.mkdir(parents=True)
    last = max(curve)
    manifest = {
        "schema_version": 1, "name": spec["name"], "run_id": run_id, "status": "completed", "spec": spec,
        "data": {"train": train or TRAIN, "val": val or VAL, "tokenizer": "char", "vocab_size": 39},
        "metrics": {"iter": last, "val_loss": curve[last], "best_val_loss": min(curve.values()), "tokens_per_sec": 1e4, "wall_seconds": last / 10},
    }
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = [{"iter": i, "kind": "eval", "train_loss": v + 0.01, "val_loss": v, "wall_seconds": i / 10} for i, v in sorted(curve.items())]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return run


def two_configurations(out: Path, spec: dict[str, Any], a_finals: list[float], b_finals: list[float], steps=(0, 10, 20)) -> None:
    """Replicates of lr=3e-3 (A) and lr=1e-3 (B), seeds 1.., each falling from 4.0 to its final loss."""
    for name, lr, finals in (("a", 3e-3, a_finals), ("b", 1e-3, b_finals)):
        for seed, final in enumerate(finals, 1):
            curve = {s: 4.0 + (final - 4.0) * s / steps[-1] for s in steps}
            write_run(out, spec, f"{name}{seed}", curve, seed=seed, lr=lr)


def verdict(capsys, *args: str) -> dict[str, Any]:
    assert main(["compare", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_groups_replicates_with_mean_sd_and_n(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.0, 2.2, 2.4], [2.5])
    assert main(["compare", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["group", "optimizer.lr", "n", "seeds", "best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds"]
    assert lines[1].split()[:7] == ["tiny/a1", "+2", "0.003", "3", "1,2,3", "2.2000", "±"] and lines[1].split()[7] == "0.2000"
    assert lines[2].split()[:6] == ["tiny/b1", "*", "0.001", "1", "1", "2.5000"]  # one run: flagged, no sd
    assert lines[3].startswith("* one run: no spread")
    assert main(["compare", str(out), "--runs"]) == 0  # one row per run, as before
    assert len(capsys.readouterr().out.splitlines()) == 5
    rows = verdict(capsys, str(out))
    assert [(r["n"], r["seeds"], r["best_val_loss"]["n"]) for r in rows] == [(3, [1, 2, 3], 3), (1, [1], 1)]
    assert rows[0]["best_val_loss"]["sd"] == pytest.approx(0.2) and rows[1]["best_val_loss"]["sd"] is None


def test_runs_that_differ_only_in_inert_fields_are_replicates(tmp_path, spec, capsys):
    out = tmp_path / "out"
    write_run(out, spec, "r1", {0: 4.0, 10: 2.0}, seed=1)
    write_run(out, spec, "r2", {0: 4.0, 10: 2.1}, seed=2, train__log_interval=7)  # cannot change results: same group
    write_run(out, spec, "r3", {0: 4.0, 10: 2.1}, seed=2, train__batch_size=8)  # another configuration
    main(["compare", str(out), "--json"])
    assert [r["n"] for r in json.loads(capsys.readouterr().out)] == [2, 1]


def test_a_clear_difference_gets_a_verdict_that_matches_scipy(tmp_path, spec, capsys):
    pytest.importorskip("scipy")
    from scipy.stats import ttest_ind

    out = tmp_path / "out"
    a, b = [2.30, 2.32, 2.31], [2.25, 2.27, 2.26]
    two_configurations(out, spec, a, b)
    r = verdict(capsys, str(out), "--final")
    oracle = ttest_ind(b, a, equal_var=False)
    assert r["step"] == 20 and r["values"] == {"a": a, "b": b}
    assert r["welch"]["p"] == pytest.approx(oracle.pvalue, rel=1e-6)
    assert (r["welch"]["low"], r["welch"]["high"]) == pytest.approx(tuple(oracle.confidence_interval()), rel=1e-6)
    assert r["verdict"].startswith(f"B is lower by 0.05 ± {r['welch']['high'] - r['welch']['difference']:.3g} (95%), p = ")
    assert r["verdict"].endswith("n = 3 and 3") and r["notes"] == []
    assert main(["compare", str(out), "--final"]) == 0
    text = capsys.readouterr().out
    assert "verdict: B is lower by 0.05" in text and "A  2.3100 ± 0.0100  (n = 3)" in text


def test_swapping_a_and_b_flips_the_verdict(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.30, 2.32, 2.31], [2.25, 2.27, 2.26])
    a_dirs = [str(out / "tiny" / f"a{i}") for i in (1, 2, 3)]
    b_dirs = [str(out / "tiny" / f"b{i}") for i in (1, 2, 3)]
    (out / "A").mkdir(), (out / "B").mkdir()
    for d in a_dirs:
        (out / "A" / Path(d).name).symlink_to(d)
    for d in b_dirs:
        (out / "B" / Path(d).name).symlink_to(d)
    ab = verdict(capsys, str(out / "A"), str(out / "B"), "--final")
    ba = verdict(capsys, str(out / "B"), str(out / "A"), "--final")
    assert ab["welch"]["difference"] == pytest.approx(-ba["welch"]["difference"])
    assert "lower" in ab["verdict"] and "higher" in ba["verdict"]


def test_no_detectable_difference_says_how_many_runs_would_detect_it(tmp_path, spec, capsys):
    out = tmp_path / "out"
    a, b = [2.300, 2.306, 2.296], [2.302, 2.309, 2.297]
    two_configurations(out, spec, a, b)
    r = verdict(capsys, str(out), "--final")
    need = stats.n_to_detect(stats.mean(b) - stats.mean(a), stats.sd(a), stats.sd(b))
    assert r["welch"]["p"] > 0.05 and need > 3
    assert r["verdict"].startswith("no difference detectable at n = 3 (B - A = 0.002 ± ")
    assert r["verdict"].endswith(f"; about n = {need} each would detect 0.002")


def test_identical_groups_give_no_difference(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.3, 2.3], [2.3, 2.3])
    r = verdict(capsys, str(out), "--final")
    assert r["difference"] == 0 and r["verdict"] == "no difference: every run gives the same value (n = 2)"


def test_one_run_each_is_flagged_and_gets_no_verdict(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.3], [2.2])
    r = verdict(capsys, str(out), "--final")
    assert r["welch"] is None
    assert r["verdict"] == "B is lower by 0.1, from n = 1 and 1: no interval, so no verdict"
    assert r["notes"] == ["one run each: no interval or p-value without replicates (nanogpt sweep SPEC --seeds N)"]


def test_different_step_grids_are_compared_at_the_last_common_step_and_said_so(tmp_path, spec, capsys):
    out = tmp_path / "out"
    for seed in (1, 2):
        write_run(out, spec, f"a{seed}", {0: 4.0, 10: 3.0, 20: 2.5 + seed / 100, 30: 2.0}, seed=seed)
        write_run(out, spec, f"b{seed}", {0: 4.0, 20: 2.4 + seed / 100, 40: 1.9}, seed=seed, lr=1e-3)
    r = verdict(capsys, str(out), "--metric", "val/loss")
    assert r["step"] == 20
    assert r["values"]["a"] == pytest.approx([2.51, 2.52]) and r["values"]["b"] == pytest.approx([2.41, 2.42])
    assert r["notes"] == ["the runs' step grids differ: compared at step 20, the last step all 4 runs evaluated"]
    r = verdict(capsys, str(out), "--final")
    assert r["values"] == {"a": [2.0, 2.0], "b": [1.9, 1.9]}
    assert r["notes"] == ["--final compares each run's last evaluation, at different steps (30, 40)"]
    assert main(["compare", str(out), "--at", "30"]) == 2
    assert "--at 30: not an evaluated step of tiny/b1 (nearest: 20, 40), tiny/b2 (nearest: 20, 40)" in capsys.readouterr().err


def test_runs_evaluated_differently_are_refused_naming_what_differs(tmp_path, spec, capsys):
    out = tmp_path / "out"
    write_run(out, spec, "a1", {0: 4.0, 10: 2.0}, seed=1)
    write_run(out, spec, "a2", {0: 4.0, 10: 2.1}, seed=2)
    write_run(out, spec, "b1", {0: 4.0, 10: 1.9}, seed=1, lr=1e-3, val={**VAL, "tokens": 9000, "sha256": "c" * 64})
    write_run(out, spec, "b2", {0: 4.0, 10: 1.8}, seed=2, lr=1e-3, val={**VAL, "tokens": 9000, "sha256": "c" * 64},
              train={**TRAIN, "sha256": "d" * 64})
    assert main(["compare", str(out), "--final"]) == 2
    err = capsys.readouterr().err
    assert "A and B were evaluated differently" in err
    assert f"data.val.sha256: A {'a' * 12}, B {'c' * 12}" in err and "data.val.tokens: A 3596, B 9000" in err
    r = verdict(capsys, str(out), "--final", "--allow-unlike")
    assert r["notes"][:2] == [f"unlike evaluation: data.val.sha256: A {'a' * 12}, B {'c' * 12}", "unlike evaluation: data.val.tokens: A 3596, B 9000"]
    assert f"data.train.sha256: A {'b' * 12}, B mixed ({'b' * 12}, {'d' * 12})" in r["notes"]


def test_eval_iters_that_differ_are_refused(tmp_path, spec, capsys):
    out = tmp_path / "out"
    write_run(out, spec, "a1", {0: 4.0, 10: 2.0}, seed=1)
    write_run(out, spec, "b1", {0: 4.0, 10: 2.0}, seed=1, train__eval_iters=50)
    assert main(["compare", str(out / "tiny" / "a1"), str(out / "tiny" / "b1"), "--final"]) == 2
    assert "train.eval_iters: A 4, B 50" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--final"], "holds 3 configurations (they differ in optimizer.lr): a verdict compares two"),
    (["--metric", "lr"], "--metric 'lr': compare's verdict reads an evaluation's metric"),
])
def test_what_a_verdict_cannot_compare_is_refused(tmp_path, spec, capsys, args, message):
    out = tmp_path / "out"
    for lr in (1e-3, 2e-3, 3e-3):
        write_run(out, spec, f"r{lr}", {0: 4.0, 10: 2.0}, lr=lr)
    assert main(["compare", str(out), *args]) == 2
    assert message in capsys.readouterr().err


def test_first_reach_interpolates_between_evaluations():
    walls = {0: 0.0, 10: 5.0, 20: 12.0}
    assert first_reach({0: 4.0, 10: 3.0, 20: 2.0}, walls, 2.5) == (15.0, 8.5)
    assert first_reach({0: 4.0, 10: 3.0, 20: 2.0}, walls, 3.0) == (10.0, 5.0)  # reached exactly at an evaluation
    assert first_reach({0: 2.0, 10: 1.0}, walls, 3.0) == (0.0, 0.0)  # below the target from the start
    assert first_reach({0: 4.0, 10: 3.0, 20: 3.5}, walls, 2.9) is None
    assert first_reach({0: 4.0, 10: 3.5, 20: 3.0}, {}, 3.25) == (15.0, None)  # no wall clock in an older run


def test_target_gives_tokens_to_reach_it_and_the_ratio_with_its_interval(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.0, 2.1, 2.2], [1.0, 1.1, 1.2], steps=(0, 10, 20))
    r = verdict(capsys, str(out), "--target", "3.0")
    per_iter = spec["train"]["batch_size"] * spec["train"]["grad_accum"] * spec["model"]["block_size"]
    # A falls 4.0 -> final over 20 steps, so it reaches 3.0 at 20/(4-final); interpolation is exact on a line
    a_steps = [20 / (4 - f) for f in (2.0, 2.1, 2.2)]
    b_steps = [20 / (4 - f) for f in (1.0, 1.1, 1.2)]
    assert r["target"]["a"]["steps"]["mean"] == pytest.approx(stats.mean(a_steps))
    assert r["target"]["a"]["tokens"]["mean"] == pytest.approx(stats.mean(a_steps) * per_iter)
    assert r["target"]["b"]["wall_seconds"]["mean"] == pytest.approx(stats.mean(b_steps) / 10)
    ratio, low, high = stats.ratio_interval(a_steps, b_steps)
    assert r["target"]["ratio_of"] == "tokens"
    assert (r["target"]["ratio"]["value"], r["target"]["ratio"]["low"], r["target"]["ratio"]["high"]) == pytest.approx((ratio, low, high))
    assert "summary" not in r  # --target alone: no comparison at a step
    assert main(["compare", str(out), "--target", "1.5"]) == 0
    text = capsys.readouterr().out
    assert "A  3 of 3 runs never reach it" in text and "B/A: none: 3 runs never reach 1.5" in text


# ---------------------------------------------------------------------------- sweep --seeds


def test_sweep_seeds_adds_a_seed_axis_from_the_specs_seed(tmp_path, capsys):
    spec = tiny_spec(tmp_path)  # seed = 7
    assert main(["sweep", str(spec), "optimizer.lr=1e-3,3e-3", "--seeds", "3", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "0  optimizer.lr=0.001 seed=7", "1  optimizer.lr=0.001 seed=8", "2  optimizer.lr=0.001 seed=9",
        "3  optimizer.lr=0.003 seed=7", "4  optimizer.lr=0.003 seed=8", "5  optimizer.lr=0.003 seed=9",
    ]
    assert main(["sweep", str(spec), "seed=100", "--seeds", "2", "--list"]) == 2
    assert "leave out the seed= word" in capsys.readouterr().err
    assert main(["sweep", str(spec), "--seeds", "0", "--list"]) == 2
    assert "--seeds must be at least 1 (got 0)" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path), "--seeds", "2"]) == 2
    assert "leave out --seeds" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_sweep_of_three_seeds_by_two_learning_rates_gets_the_verdict_its_losses_say(tmp_path):
    """Six tiny runs: lr 3e-3 (A) against 3e-4 (B), ten steps each. B learns far less in ten steps;
    the verdict says so, and its difference is the one the manifests' losses give."""
    import subprocess
    import sys

    from tests.tinyrun import env_with_plugins, REPO

    spec = tiny_spec(tmp_path, train={"max_iters": 10, "eval_interval": 5})
    done = subprocess.run([sys.executable, "-m", "nanogpt", "sweep", str(spec), "optimizer.lr=3e-3,3e-4", "--seeds", "3"],
                          env=env_with_plugins(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    sweep = next((tmp_path / "runs" / "tiny" / "sweeps").iterdir())
    shown = subprocess.run([sys.executable, "-m", "nanogpt", "compare", str(sweep), "--final", "--json"],
                           env=env_with_plugins(), cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    r = json.loads(shown.stdout)
    finals = {}
    for run in (tmp_path / "runs" / "tiny").iterdir():
        if run.name != "sweeps":
            m = json.loads((run / "manifest.json").read_text())
            finals.setdefault(m["spec"]["optimizer"]["lr"], []).append(m["metrics"]["val_loss"])
    assert r["a"]["seeds"] == r["b"]["seeds"] == [7, 8, 9] and r["step"] == 10
    assert sorted(r["values"]["a"]) == sorted(finals[3e-3]) and sorted(r["values"]["b"]) == sorted(finals[3e-4])
    assert r["difference"] == pytest.approx(stats.mean(finals[3e-4]) - stats.mean(finals[3e-3]))
    assert r["difference"] > 0 and r["welch"]["p"] < 0.05
    assert r["verdict"].startswith(f"B is higher by {r['difference']:.3g} ± ") and r["verdict"].endswith("n = 3 and 3")
    assert r["notes"] == []


def test_a_target_reached_at_the_first_evaluation_has_no_ratio_but_no_crash(tmp_path, spec, capsys):
    out = tmp_path / "out"
    two_configurations(out, spec, [2.0, 2.1], [1.0, 1.1])
    assert main(["compare", str(out), "--target", "4.5"]) == 0
    assert "B/A: none: A reaches it at its first evaluation" in capsys.readouterr().out
