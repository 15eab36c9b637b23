"""What `plot` draws: the x and y of every line in every panel equal the run's metrics.jsonl, for each
--metric and each --x. (tests/runs/test_compare.py checks the file types and the labels.)"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from nanogpt.cli import main
from nanogpt.runs import plot
from tests.runs.test_compare import four_runs  # noqa: F401 - the fixture

FIELDS = {  # written here rather than read from plot.CURVES, so a wrong mapping there fails
    "loss/val": ("eval", "val_loss"), "loss/train": ("eval", "train_loss"), "loss/train_step": ("train", "loss"),
    "lr": ("train", "lr"), "grad_norm": ("train", "grad_norm"), "tokens_per_sec": ("train", "tokens_per_sec"),
    "mfu": ("train", "mfu"),
}
TOKENS_PER_ITER = 4 * 2 * 32  # tiny_spec: batch_size x grad_accum x block_size


def _distinct_metrics(run: Path, seed: int) -> list[dict]:
    """metrics.jsonl with a different random value in every field, and wall time that is no multiple of iter."""
    rng = random.Random(seed)
    records, wall = [], 0.0
    for i in range(0, 41, 5):
        wall += rng.uniform(0.1, 3.0)
        records.append({"iter": i, "kind": "train", "wall_seconds": wall, "loss": rng.random(), "lr": rng.random(),
                        "grad_norm": rng.random(), "tokens_per_sec": rng.random(), "mfu": rng.random()})
        if i % 10 == 0:
            records.append({"iter": i, "kind": "eval", "wall_seconds": wall + 0.05, "val_loss": rng.random(), "train_loss": rng.random()})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _expected(records: list[dict], tag: str, x: str) -> tuple[list[float], list[float]]:
    kind, field = FIELDS[tag]
    rows = [r for r in records if r["kind"] == kind]
    xs = {"iter": lambda r: r["iter"], "tokens": lambda r: r["iter"] * TOKENS_PER_ITER, "wall": lambda r: r["wall_seconds"]}[x]
    return [xs(r) for r in rows], [r[field] for r in rows]


@pytest.mark.parametrize("x", ["iter", "tokens", "wall"])
@pytest.mark.parametrize("tags", [["loss/val", "loss/train"], ["loss/train_step", "lr", "grad_norm"], ["tokens_per_sec", "mfu"]])
def test_the_lines_drawn_are_the_runs_metrics(four_runs, tmp_path, capsys, monkeypatch, x, tags):  # noqa: F811
    _, sweep, runs = four_runs
    written = {run.name: _distinct_metrics(run, seed) for seed, run in enumerate(runs)}
    figures = []
    draw = plot.draw
    monkeypatch.setattr(plot, "draw", lambda *a, **k: figures.append(draw(*a, **k)) or figures[-1])
    metric_args = [arg for tag in tags for arg in ("--metric", tag)]
    assert main(["plot", str(sweep), "-o", str(tmp_path / "p.svg"), "--x", x, *metric_args]) == 0, capsys.readouterr().err
    (figure,) = figures
    panels = {ax.get_title(): ax for ax in figure.axes if ax.get_visible() and ax.get_title()}
    assert sorted(panels) == sorted(tags)
    for tag in tags:
        lines = panels[tag].get_lines()
        assert len(lines) == len(runs), tag
        drawn = sorted((list(map(float, line.get_xdata())), list(map(float, line.get_ydata()))) for line in lines)
        want = sorted(_expected(records, tag, x) for records in written.values())
        assert drawn == [(list(map(float, a)), list(map(float, b))) for a, b in want], (tag, x)


def test_tokens_seen_do_not_grow_with_the_world_size(four_runs, tmp_path, capsys, monkeypatch):  # noqa: F811
    """A run of 2 processes (its manifest says so) is drawn against batch_size x grad_accum x block_size
    tokens an iteration, as on one: train.grad_accum counts the micro-batches of all processes together
    (a global batch is the same on any number of them), so multiplying by the world size would draw
    twice the tokens the run saw."""
    _, _, runs = four_runs
    run = runs[0]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["spec"]["train"]["grad_accum"] == 2 and manifest["spec"]["train"]["batch_size"] == 4
    manifest["hardware"] = {**(manifest.get("hardware") or {}), "world_size": 2, "device_count": 2}
    (run / "manifest.json").write_text(json.dumps(manifest))
    records = _distinct_metrics(run, 7)
    figures = []
    draw = plot.draw
    monkeypatch.setattr(plot, "draw", lambda *a, **k: figures.append(draw(*a, **k)) or figures[-1])
    assert main(["plot", str(run), "-o", str(tmp_path / "p.svg"), "--x", "tokens", "--metric", "loss/val"]) == 0, capsys.readouterr().err
    (line,) = next(ax for ax in figures[0].axes if ax.get_title() == "loss/val").get_lines()
    assert list(map(float, line.get_xdata())) == [float(r["iter"] * 4 * 2 * 32) for r in records if r["kind"] == "eval"]
