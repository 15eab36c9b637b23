"""`compare` and `plot` over many runs: the columns that differ, sorting, the output formats, and the
files `plot` writes. The runs are manifests and metrics.jsonl written here (no training)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest

from nanogpt.cli import main
from nanogpt.config.load import load_spec
from nanogpt.config.canonical import resolved
from tests.tinyrun import tiny_spec


def make_run(out: Path, spec: dict[str, Any], run_id: str, *, best: float | None, lr: float, n_layer: int,
             sweep: dict[str, Any] | None = None, status: str = "completed", iters: int = 40) -> Path:
    """A run dir as the runner leaves it: a manifest with the resolved spec and metrics, and metrics.jsonl."""
    spec = json.loads(json.dumps(spec))
    spec["optimizer"]["lr"], spec["model"]["n_layer"] = lr, n_layer
    run = out / spec["name"] / run_id
    run.mkdir(parents=True)
    curve = [(i, 3.5 - i * (lr * 10) / (1 + n_layer)) for i in range(0, iters + 1, 10)]
    metrics = {"iter": iters, "best_val_loss": best, "val_loss": best, "tokens_per_sec": 1000.0 * n_layer, "wall_seconds": 12.5}
    manifest = {"schema_version": 1, "name": spec["name"], "run_id": run_id, "status": status, "spec": spec,
                "metrics": metrics if best is not None else {}, "checkpoints": []}
    if sweep is not None:
        manifest["sweep"] = sweep
    (run / "manifest.json").write_text(json.dumps(manifest))
    lines = []
    for i, loss in curve:
        lines.append({"iter": i, "kind": "eval", "train_loss": loss + 0.01, "val_loss": loss, "wall_seconds": i * 0.5})
        lines.append({"iter": i, "kind": "train", "loss": loss + 0.02, "lr": lr, "tokens_per_sec": 1000.0, "wall_seconds": i * 0.5})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"iter": 99, "kind"')  # a torn last line
    return run


@pytest.fixture
def four_runs(tmp_path) -> tuple[Path, Path, list[Path]]:
    """Four runs of a 2 x 2 sweep (optimizer.lr x model.n_layer) with their sweep dir, and a fifth run with no metrics yet."""
    exp, _ = load_spec(tiny_spec(tmp_path), check_files=False)
    spec = resolved(exp)
    out = tmp_path / "out"
    grid = [(1e-3, 1, 2.5), (1e-3, 2, 2.1), (3e-3, 1, 1.9), (3e-3, 2, 2.3)]
    runs = [
        make_run(out, spec, f"r{i}", best=best, lr=lr, n_layer=n,
                 sweep={"id": "s", "index": i, "values": {"optimizer.lr": lr, "model.n_layer": n}})
        for i, (lr, n, best) in enumerate(grid)
    ]
    sweep = out / "tiny" / "sweeps" / "s"
    sweep.mkdir(parents=True)
    members = [{"index": i, "values": {}, "spec_sha256": "", "run_dir": f"../../r{i}", "status": "completed"} for i in range(4)]
    (sweep / "sweep.json").write_text(json.dumps({"schema_version": 1, "id": "s", "members": members}))
    make_run(out, spec, "r9", best=None, lr=1e-4, n_layer=1, status="running")
    return out, sweep, runs


def test_compare_columns_are_what_differs_then_results_sorted_by_best_val_loss(four_runs, capsys):
    """A sweep dir expands to its members; columns: the run, the swept keys in sweep order, then the results; best first."""
    _, sweep, _ = four_runs
    assert main(["compare", str(sweep), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows[0]) == ["run", "optimizer.lr", "model.n_layer", "status", "iter", "best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds"]
    assert [r["run"] for r in rows] == ["tiny/r2", "tiny/r1", "tiny/r3", "tiny/r0"]
    assert rows[0] == {"run": "tiny/r2", "optimizer.lr": 0.003, "model.n_layer": 1, "status": "completed", "iter": 40,
                       "best_val_loss": 1.9, "val_loss": 1.9, "tokens_per_sec": 1000.0, "wall_seconds": 12.5}


def test_compare_table_csv_and_sort(four_runs, capsys):
    """The table and CSV carry the same rows; --sort takes any column (missing values last), --reverse flips it."""
    out, _, _ = four_runs
    assert main(["compare", str(out), "--csv", "--sort", "optimizer.lr", "--reverse"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["run"] for r in rows] == ["tiny/r2", "tiny/r3", "tiny/r0", "tiny/r1", "tiny/r9"]
    assert rows[-1]["best_val_loss"] == "" and rows[-1]["status"] == "running"
    assert main(["compare", str(out / "tiny")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["run", "optimizer.lr", "model.n_layer", "status", "iter", "best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds"]
    assert lines[1].split() == ["tiny/r2", "0.003", "1", "completed", "40", "1.9000", "1.9000", "1,000", "12.5"]
    assert lines[-1].split()[:4] == ["tiny/r9", "0.0001", "1", "running"] and lines[-1].split()[4:] == ["-"] * 5
    assert main(["compare", str(out), "--sort", "nope"]) == 2
    assert "--sort 'nope': not a column here" in capsys.readouterr().err


def test_compare_names_what_it_cannot_read(four_runs, tmp_path, capsys):
    """A truncated manifest is named on stderr and left out; a path that does not exist is exit 2."""
    out, _, runs = four_runs
    (runs[0] / "manifest.json").write_text('{"schema_version": 1, "spec": {')
    assert main(["compare", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert "manifest.json' is not valid JSON" in captured.err and "left out" in captured.err
    assert "tiny/r0" not in {r["run"] for r in json.loads(captured.out)}
    assert main(["compare", str(tmp_path / "nowhere")]) == 2


@pytest.mark.parametrize("suffix,magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_writes_the_file_type_its_extension_names(four_runs, tmp_path, capsys, suffix, magic):
    """plot writes PNG, SVG or PDF by the extension, and prints the path."""
    _, sweep, _ = four_runs
    target = tmp_path / f"curves{suffix}"
    assert main(["plot", str(sweep), "-o", str(target)]) == 0
    assert capsys.readouterr().out.strip() == str(target)
    assert target.read_bytes().startswith(magic)


def test_plot_labels_runs_by_what_differs(four_runs, tmp_path, capsys):
    """Each line is labelled by the swept values; other metrics and x axes draw too."""
    _, sweep, _ = four_runs
    target = tmp_path / "curves.svg"
    assert main(["plot", str(sweep), "-o", str(target), "--metric", "loss/val", "--metric", "lr", "--x", "wall"]) == 0
    svg = target.read_text()
    for label in ("optimizer.lr=0.001 model.n_layer=1", "optimizer.lr=0.003 model.n_layer=2"):
        assert label in svg
    assert "wall time (s)" in svg and "lr" in svg
    assert main(["plot", str(sweep), "-o", str(tmp_path / "t.png"), "--x", "tokens"]) == 0


def test_plot_refuses_what_it_cannot_write(four_runs, tmp_path, capsys):
    """An unknown extension or metric is exit 2 before anything is written."""
    _, sweep, _ = four_runs
    assert main(["plot", str(sweep), "-o", str(tmp_path / "x.jpg")]) == 2
    assert "the file type follows the extension, one of .png, .svg, .pdf" in capsys.readouterr().err
    assert main(["plot", str(sweep), "-o", str(tmp_path / "x.png"), "--metric", "loss/vall"]) == 2
    assert not (tmp_path / "x.jpg").exists() and not (tmp_path / "x.png").exists()


def test_plot_labels_a_gpt_and_a_llama_by_their_kind(tmp_path):
    """Runs of two model kinds are labelled by the kind, not by every field one kind has and the other
    lacks (which made a legend wider than the figure), and a description differing beside the name is left out."""
    from nanogpt.runs.compare import collect_runs
    from nanogpt.runs.plot import labels

    runs = []
    for kind, model in (("gpt", {}), ("llama", {"kind": "llama", "n_kv_head": 1})):
        spec = resolved(load_spec(tiny_spec(tmp_path, name=kind, model=model), check_files=False)[0])
        spec["description"] = f"a {kind}"
        runs.append(make_run(tmp_path / "out", spec, "r0", best=2.0, lr=1e-3, n_layer=1))
    assert labels(collect_runs([str(r) for r in runs])) == ["name=gpt model.kind=gpt", "name=llama model.kind=llama"]
