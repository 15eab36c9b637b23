"""Comparing runs: `diff`, `runs`, provenance and git state in the manifest, TensorBoard's server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from nanogpt.cli import main
from tests.tinyrun import only_run_dir, tiny_spec

SHORT = {"max_iters": 10, "eval_interval": 5, "log_interval": 5}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two tiny runs of one spec, the second with one override; and the spec."""
    tmp = tmp_path_factory.mktemp("pair")
    spec = tiny_spec(tmp, train=SHORT)
    assert main(["run", str(spec), "logging.run_id=a"]) == 0
    assert main(["run", str(spec), "logging.run_id=b", "optimizer.lr=0.001"]) == 0
    runs = tmp / "runs" / "tiny"
    return runs / "a", runs / "b", spec


def test_diff_names_the_override_and_the_metrics_it_moved(two_runs, capsys):
    """Two runs differing in one override: diff names that path, then the metrics that followed, exit 1."""
    a, b, _ = two_runs
    assert main(["diff", str(a), str(b)]) == 1
    lines = capsys.readouterr().out.splitlines()
    spec_lines = [l for l in lines if l.startswith("spec.")]
    assert spec_lines[0] == "spec.optimizer.lr: 0.003 -> 0.001"
    # run_id differs too, but it is an output path: listed after, marked as not changing results
    assert all("[no effect on results]" in l for l in spec_lines[1:])
    metric_lines = [l for l in lines if l.startswith("metrics.")]
    assert any(l.startswith("metrics.val_loss: ") and l.endswith(")") for l in metric_lines)
    assert lines.index(spec_lines[0]) < lines.index(metric_lines[0])
    assert not any(l.startswith(("run_id", "created_at", "metrics.wall_seconds")) for l in lines)


def test_diff_of_a_run_with_itself_is_silent(two_runs, capsys):
    """A run against itself (dir vs its manifest file): exit 0 and no output."""
    a, _, _ = two_runs
    assert main(["diff", str(a), str(a / "manifest.json")]) == 0
    assert capsys.readouterr().out == ""


def test_diff_all_shows_volatile_fields(two_runs, capsys):
    """--all adds the values that always differ, such as the run id and the wall time."""
    a, b, _ = two_runs
    main(["diff", "--all", str(a), str(b)])
    lines = capsys.readouterr().out.splitlines()
    assert "run_id: 'a' -> 'b'" in lines
    assert any(l.startswith("metrics.wall_seconds: ") for l in lines)


def test_diff_json_parses(two_runs, capsys):
    """--json prints a list of {path, a, b}."""
    a, b, _ = two_runs
    assert main(["diff", "--json", str(a), str(b)]) == 1
    items = json.loads(capsys.readouterr().out)
    assert {"path": "spec.optimizer.lr", "a": 0.003, "b": 0.001} in items
    assert all(set(i) == {"path", "a", "b"} for i in items)


def test_diff_spec_against_spec_and_run(two_runs, tmp_path, capsys):
    """Specs compare with specs and with runs, on the resolved spec only."""
    _, b, spec = two_runs
    other = tmp_path / "other.toml"
    other.write_text(spec.read_text().replace("n_layer = 2", "n_layer = 3"))
    assert main(["diff", str(spec), str(other)]) == 1
    assert capsys.readouterr().out.splitlines() == ["spec.model.n_layer: 2 -> 3"]
    assert main(["diff", str(spec), str(b)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "spec.optimizer.lr: 0.003 -> 0.001" and not any(l.startswith("metrics") for l in out)


def test_diff_reports_unreadable_input(two_runs, tmp_path, capsys):
    """A truncated manifest or a missing path is exit 2 with a clear message, and is left untouched."""
    a, _, _ = two_runs
    broken = tmp_path / "broken"
    shutil.copytree(a, broken)
    text = (broken / "manifest.json").read_text()
    (broken / "manifest.json").write_text(text[: len(text) // 2])
    assert main(["diff", str(a), str(broken)]) == 2
    err = capsys.readouterr().err
    assert "not valid JSON" in err and "Traceback" not in err
    assert (broken / "manifest.json").read_text() == text[: len(text) // 2]
    assert main(["diff", str(a), str(tmp_path / "nowhere")]) == 2


def test_manifest_records_provenance(tmp_path):
    """The manifest says where each value came from: the spec file, a base it extends, an override, or the default."""
    spec = tiny_spec(tmp_path, train=SHORT)
    base = tmp_path / "base.toml"
    base.write_text("[optimizer]\nweight_decay = 0.05\n")
    spec.write_text('extends = "base.toml"\n' + spec.read_text())
    assert main(["run", str(spec), "optimizer.lr=0.002"]) == 0
    m = json.loads((only_run_dir(tmp_path / "runs") / "manifest.json").read_text())
    prov = m["provenance"]
    assert prov["optimizer.lr"] == "override optimizer.lr=0.002"
    assert prov["optimizer.weight_decay"] == str(base)
    assert prov["model.n_layer"] == str(spec)
    assert prov["optimizer.eps"] == "default"
    assert m["overrides"] == ["optimizer.lr=0.002"]
    # what the spec changes relative to what it extends, also shown in TensorBoard
    assert m["extends"]["files"] == [str(base)]
    changes = {c["path"]: c for c in m["extends"]["changes"]}
    assert changes["optimizer.lr"] == {"path": "optimizer.lr", "extended": None, "value": 0.002, "source": "override optimizer.lr=0.002"}
    assert "optimizer.weight_decay" not in changes and changes["model.n_layer"]["value"] == 2
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(only_run_dir(tmp_path / "runs")))
    acc.Reload()
    assert "spec/vs_extended/text_summary" in acc.Tags()["tensors"]


def test_dirty_git_tree_is_recorded(tmp_path, monkeypatch):
    """A run from a repository with uncommitted changes records dirty = true, the diff's hash, and the diff."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = lambda *a: subprocess.run(["git", *a], cwd=repo, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "start")
    (repo / "notes.txt").write_text("one\n")
    git("add", "notes.txt")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "-m", "notes")
    (repo / "notes.txt").write_text("two\n")
    spec = tiny_spec(repo, train=SHORT)
    monkeypatch.chdir(repo)
    assert main(["run", str(spec)]) == 0
    run = only_run_dir(repo / "runs")
    m = json.loads((run / "manifest.json").read_text())
    assert m["git"]["dirty"] is True and len(m["git"]["commit"]) == 40
    import hashlib

    diff = (run / "git.diff").read_text()
    assert "+two" in diff and hashlib.sha256(diff.encode()).hexdigest() == m["git"]["diff_sha256"]


def test_runs_table(two_runs, tmp_path, capsys):
    """`runs` lists completed, failed, interrupted and corrupt runs, newest first, and filters by name."""
    a, b, _ = two_runs
    root = tmp_path / "runs"
    for status, src in (("completed", a), ("failed", b), ("interrupted", a)):
        dest = root / "exp" / status
        shutil.copytree(src, dest)
        m = json.loads((dest / "manifest.json").read_text())
        m["status"], m["name"], m["run_id"] = status, "exp", status
        (dest / "manifest.json").write_text(json.dumps(m))
    corrupt = root / "other" / "corrupt"
    corrupt.mkdir(parents=True)
    (corrupt / "manifest.json").write_text("{ not json")
    assert main(["runs", str(root)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["name", "run", "id", "status", "iter", "best", "val", "avg", "tok/s", "age"]
    statuses = {l.split()[1]: l.split()[2] for l in lines[1:]}
    assert statuses == {"completed": "completed", "failed": "failed", "interrupted": "interrupted", "corrupt": "unreadable"}
    assert "corrupt" in err and "Traceback" not in err
    assert main(["runs", str(root), "--name", "other"]) == 0
    assert [l.split()[1] for l in capsys.readouterr().out.splitlines()[1:]] == ["corrupt"]


def test_runs_exit_0_and_say_why_when_there_is_nothing_to_list(two_runs, tmp_path, capsys):
    """A missing DIR, a file, and a --name that matches nothing each say so, exit 0 (docs/runs.md's
    contract for `runs`), and a --name miss lists the names there are."""
    a, _, _ = two_runs
    root = a.parent.parent
    assert main(["runs", str(tmp_path / "missing")]) == 0
    assert capsys.readouterr().out == f"no runs under {tmp_path / 'missing'}: no such directory\n"
    (tmp_path / "file").write_text("x")
    assert main(["runs", str(tmp_path / "file")]) == 0
    assert capsys.readouterr().out == f"no runs under {tmp_path / 'file'}: it is not a directory\n"
    assert main(["runs", str(root), "--name", "nomatch"]) == 0
    assert capsys.readouterr().out == f"no runs under {root} whose name contains 'nomatch' (names there: tiny)\n"


def test_runs_shows_the_folder_of_a_copied_run_and_the_average_throughput(two_runs, tmp_path, capsys):
    """A copied run dir is its own row under its folder's id, marked, with the manifest's id in a
    footnote; the tok/s column is the manifest's average, not a last window's."""
    a, _, _ = two_runs
    root = tmp_path / "runs"
    shutil.copytree(a, root / "tiny" / "a")
    shutil.copytree(a, root / "tiny" / "a-copy")
    assert main(["runs", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    ids = sorted(line.split()[1] for line in lines[1:3])
    assert ids == ["a", "a-copy*"]
    assert lines[3] == f"* {root / 'tiny' / 'a-copy'}: its manifest says tiny/a (a copied or renamed run directory)"
    average = json.loads((a / "manifest.json").read_text())["metrics"]["tokens_per_sec"]
    assert all(f"{average:,.0f}" in line.split() for line in lines[1:3])


def test_diff_results_only_answers_same_results_by_exit_code(two_runs, tmp_path, capsys):
    """Two runs of one spec under other ids and out_dirs differ only in fields marked [no effect on
    results]: plain diff exits 1 on them, --results-only exits 0 and prints nothing; a real
    change (b's lr) still exits 1 with --results-only, without the inert lines."""
    a, b, spec = two_runs
    assert main(["run", str(spec), "logging.run_id=again", f"logging.out_dir={tmp_path / 'other'}"]) == 0
    again = tmp_path / "other" / "tiny" / "again"
    capsys.readouterr()
    assert main(["diff", str(a), str(again)]) == 1
    assert all(line.endswith("[no effect on results]") for line in capsys.readouterr().out.splitlines())
    assert main(["diff", "--results-only", str(a), str(again)]) == 0
    assert capsys.readouterr().out == ""
    assert main(["diff", "--results-only", str(a / "spec.toml"), str(again / "spec.toml")]) == 0
    assert main(["diff", "--results-only", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "spec.optimizer.lr: 0.003 -> 0.001" in out and "no effect on results" not in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_tensorboard_server_lists_the_run(two_runs):
    """TensorBoard's own server, started on a free loopback port, lists the run's scalar tags."""
    a, _, _ = two_runs
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(a.parent.parent), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        tags = None
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5) as r:
                    tags = json.load(r)
                if "tiny/a" in tags:
                    break
            except OSError:
                time.sleep(0.5)
        assert tags is not None and "tiny/a" in tags and "tiny/b" in tags
        assert {"loss/train", "loss/val", "loss/train_step", "lr"} <= set(tags["tiny/a"])
    finally:
        server.terminate()
        server.wait(timeout=30)
