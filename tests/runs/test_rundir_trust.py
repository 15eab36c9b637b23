"""A run directory a hostile world cannot fool: edited manifests, deleted or corrupt checkpoints, two
writers, signals at any moment, a closed console, corrupt dataset records, foreign files."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nanogpt.cli import main
from tests.tinyrun import (
    ReferenceRun, assert_unchanged, env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec,
    tree_digest,
)


def manifest_of(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def write_manifest(run: Path, m: dict) -> None:
    (run / "manifest.json").write_text(json.dumps(m, indent=2))


def run_dirs(runs: Path, name: str = "tiny") -> list[Path]:
    return sorted(d for d in (runs / name).iterdir() if d.is_dir() and not d.name.startswith("."))


@pytest.fixture(scope="module")
def stopped_at_30(tmp_path_factory) -> Path:
    """The tiny spec run to 30 of its 40-iteration schedule (checkpoints at 10, 20, 30), as if stopped there:
    made once for this module, read only (the tests resume copies of it; checked unchanged at the end)."""
    tmp = tmp_path_factory.mktemp("stopped")
    # train.max_iters is a field a resume may change: this run continues to 40 as if never stopped
    assert main(["run", str(tiny_spec(tmp)), "train.max_iters=30"]) == 0
    before = tree_digest(tmp)
    yield only_run_dir(tmp / "runs")
    assert_unchanged(tmp, before)


def stopped_run(tmp: Path, stopped_at_30: Path) -> Path:
    """A copy of the stopped run as `tmp`/runs/tiny/ID, where a run of a spec written in `tmp` would be (its
    dataset stays the shared one, which a resume only reads)."""
    return Path(shutil.copytree(stopped_at_30, tmp / "runs" / "tiny" / stopped_at_30.name))


def wait_for(predicate, timeout: float = 60, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def popen_run(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", *args], env=env_with_plugins(),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


# ------------------------------------------------------------------- paths outside the run dir


def test_manifest_paths_outside_the_run_are_never_followed(tmp_path: Path, reference_run: ReferenceRun, stopped_at_30: Path):
    """Checkpoint entries naming ../../../victim.txt or an absolute path are ignored with a warning,
    never pruned; the resume still ends bit-identical to a run that never stopped."""
    run = stopped_run(tmp_path, stopped_at_30)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    absolute = tmp_path / "absolute.pt"
    absolute.write_text("also precious")
    assert (run / "../../../victim.txt").resolve() == victim.resolve()
    m = manifest_of(run)
    m["checkpoints"] = [
        {"path": "../../../victim.txt", "step": 1, "sha256": "0" * 64, "val_loss": 9.0},
        {"path": str(absolute), "step": 2, "sha256": "0" * 64, "val_loss": 9.0},
    ] + m["checkpoints"]
    write_manifest(run, m)
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40", "train.keep_checkpoints=1")
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "precious" and absolute.read_text() == "also precious"
    assert "../../../victim.txt" in proc.stderr and "never followed" in proc.stderr
    after = manifest_of(run)
    assert all(not Path(e["path"]).is_absolute() and ".." not in e["path"] for e in after["checkpoints"])
    assert losses(run) == losses(reference_run.dir)


def test_meta_json_file_outside_the_dataset_is_refused(tmp_path: Path):
    """A meta.json whose split file is ../elsewhere.bin is refused with a message naming train.file."""
    spec = tiny_spec(tmp_path)
    assert main(["prepare", str(spec)]) == 0
    data = tmp_path / "data" / "tiny_char"
    shutil.copy(data / "train.bin", tmp_path / "elsewhere.bin")
    meta = json.loads((data / "meta.json").read_text())
    meta["train"]["file"] = "../../elsewhere.bin"
    (data / "meta.json").write_text(json.dumps(meta))
    from nanogpt.data.files import open_dataset
    from nanogpt.errors import DataError
    from nanogpt.config.load import load_spec

    exp, _ = load_spec(spec)
    with pytest.raises(DataError, match=r"train\.file: must name a file in the dataset's folder"):
        open_dataset(exp.data)


# ---------------------------------------------------------------------------- deleted checkpoints


def test_resume_with_checkpoints_deleted_refuses_then_force_starts_over(tmp_path: Path, stopped_at_30: Path):
    """rm checkpoints/* then --resume: exit 2 saying so, nothing changed; with --force the run starts over
    from iteration 0, saying it, and ends with checkpoints that exist and are listed."""
    run = stopped_run(tmp_path, stopped_at_30)
    for f in (run / "checkpoints").glob("*.pt"):
        f.unlink()
    before = (run / "manifest.json").read_text(), (run / "metrics.jsonl").read_text()
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40")
    assert proc.returncode == 2, proc.stderr
    assert "none of them exists" in proc.stderr and "--force" in proc.stderr and "Traceback" not in proc.stderr
    assert ((run / "manifest.json").read_text(), (run / "metrics.jsonl").read_text()) == before
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40", "--force")
    assert proc.returncode == 0, proc.stderr
    assert "starts over from iteration 0" in proc.stderr
    m = manifest_of(run)
    assert m["status"] == "completed" and m["metrics"]["iter"] == 40
    assert {e["step"] for e in m["checkpoints"]} >= {30, 40}
    assert all((run / e["path"]).is_file() for e in m["checkpoints"])
    assert [r[0] for r in losses(run) if r[1] == "eval"] == [0, 10, 20, 30, 40]


# ---------------------------------------------------------------------------- verified resume


def flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 64):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_latest_checkpoint_falls_back_to_the_previous_one(tmp_path: Path, reference_run: ReferenceRun, stopped_at_30: Path):
    """Flipped bytes in the newest checkpoint: the resume names it, continues from the newest intact
    one, and still ends bit-identical to the run that never stopped."""
    run = stopped_run(tmp_path, stopped_at_30)
    latest = run / "checkpoints" / "ckpt-00000030.pt"
    flip_bytes(latest)
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40")
    assert proc.returncode == 0, proc.stderr
    assert "ckpt-00000030.pt is corrupt or was replaced" in proc.stderr
    assert "from ckpt-00000020.pt (iteration 20)" in proc.stdout
    assert losses(run) == losses(reference_run.dir)
    assert same_weights(final_weights(run), final_weights(reference_run.dir))


def test_checkpoint_from_another_run_is_not_loaded(tmp_path: Path, stopped_at_30: Path):
    """A checkpoint copied in from a run of another spec is caught by its sha256, and, when the manifest
    is edited to match, by the spec it records, each refusal showing the field that differs with the
    checkpoint's value and the run's; with no intact checkpoint left the resume exits 1."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    run = stopped_run(tmp_path / "a", stopped_at_30)
    other_spec = tiny_spec(tmp_path / "b", optimizer={"lr": 1e-3})
    assert main(["run", str(other_spec), "train.max_iters=30"]) == 0
    other = only_run_dir(tmp_path / "b" / "runs")
    for name in ("ckpt-00000020.pt", "ckpt-00000030.pt"):
        shutil.copy(other / "checkpoints" / name, run / "checkpoints" / name)
    metrics_before = (run / "metrics.jsonl").read_text()
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40")
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("is corrupt or was replaced") == 2 and "no intact checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr and (run / "metrics.jsonl").read_text() == metrics_before
    # a manifest edited to carry the foreign files' hashes: the spec inside them gives them away
    m = manifest_of(run)
    for e in m["checkpoints"]:
        e["sha256"] = next(o["sha256"] for o in manifest_of(other)["checkpoints"] if o["step"] == e["step"])
    write_manifest(run, m)
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40")
    assert proc.returncode == 1, proc.stderr
    # each refusal's diff names the field and both values, the checkpoint's first and the run's second
    for step in (20, 30):
        assert re.search(rf"checkpoint checkpoints/ckpt-000000{step}\.pt was saved by a different spec "
                         r"\([^\n]*\boptimizer\.lr 0\.001 -> 0\.003\); it is not used", proc.stderr), proc.stderr
    assert "optimizer.lr 0.003 -> 0.001" not in proc.stderr
    assert "no intact checkpoint" in proc.stderr


def test_checkpoint_that_does_not_fit_the_model_is_a_clear_error(tmp_path: Path, stopped_at_30: Path):
    """A verified checkpoint whose tensors have other shapes stops the resume with exit 1 naming the
    tensor and both shapes, and the run is left `failed`, not `running`."""
    run = stopped_run(tmp_path, stopped_at_30)
    path = run / "checkpoints" / "ckpt-00000030.pt"
    state = torch.load(path, weights_only=True)
    state["model"]["transformer.wpe.weight"] = torch.zeros(16, 32)
    torch.save(state, path)
    from nanogpt.fileio import sha256_file

    m = manifest_of(run)
    next(e for e in m["checkpoints"] if e["step"] == 30)["sha256"] = sha256_file(path)
    write_manifest(run, m)
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=40")
    assert proc.returncode == 1, proc.stderr
    assert "transformer.wpe.weight has shape (16, 32), the model needs (32, 32)" in proc.stderr
    assert "Traceback" not in proc.stderr and manifest_of(run)["status"] == "failed"


# ---------------------------------------------------------------------------------- one writer


@pytest.mark.slow
def test_second_writer_is_refused_and_a_killed_writer_leaves_no_lock(tmp_path: Path, constant_lr_reference: ReferenceRun):
    """While a run trains, a --resume of it exits 2 naming the holder's PID and host, and changes nothing;
    after SIGKILL the lock is gone at once and the resume ends bit-identical."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.3})
    proc = popen_run(str(spec))
    runs = tmp_path / "runs" / "tiny"
    try:
        wait_for(lambda: runs.exists() and any(runs.glob("*/checkpoints/ckpt-00000010.pt")), what="first checkpoint")
        run = only_run_dir(tmp_path / "runs")
        second = nanogpt("run", "--resume", str(run))
        assert second.returncode == 2, second.stderr
        assert f"PID {proc.pid} on" in second.stderr and "Traceback" not in second.stderr
        assert "resumes" not in manifest_of(run)
    finally:
        proc.kill()
        proc.wait()
    assert manifest_of(run)["status"] == "running"  # what SIGKILL leaves: nobody could say otherwise
    proc = nanogpt("run", "--resume", str(run), "schedule.seconds=0", "--force")
    assert proc.returncode == 0, proc.stderr
    assert losses(run) == losses(constant_lr_reference.dir)


@pytest.mark.slow
def test_two_resumes_at_once_one_wins(tmp_path: Path):
    """Two resumes of one run started together: exactly one trains, the other is refused with exit 2."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.0})
    nanogpt("run", str(spec), "train.max_iters=30", check=True)
    run = only_run_dir(tmp_path / "runs")
    slower = ["schedule.seconds=0.1", "--force"]
    a = popen_run("--resume", str(run), "train.max_iters=40", *slower)
    b = popen_run("--resume", str(run), "train.max_iters=40", *slower)
    codes = sorted([a.wait(timeout=120), b.wait(timeout=120)])
    assert codes == [0, 2]
    m = manifest_of(run)
    assert len(m["resumes"]) == 1 and m["status"] == "completed"
    evals = [r[0] for r in losses(run) if r[1] == "eval"]
    assert evals == sorted(set(evals))  # no line logged twice


# ------------------------------------------------------------------------- auto-resume by name


@pytest.mark.slow
def test_auto_resume_after_sigkill_continues_the_same_run(tmp_path: Path, constant_lr_reference: ReferenceRun):
    """With train.auto_resume, `run SPEC` after a SIGKILL (a requeue) continues the killed run: one run
    dir, the same losses as a run never stopped; once completed, the next `run SPEC` starts a new run."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.03},
                     train={"auto_resume": True, "max_iters": 40, "eval_interval": 10, "eval_iters": 4,
                            "log_interval": 1, "batch_size": 4, "grad_accum": 2})
    proc = popen_run(str(spec))
    runs = tmp_path / "runs" / "tiny"
    wait_for(lambda: runs.exists() and any(runs.glob("*/checkpoints/ckpt-00000020.pt")), what="a checkpoint")
    proc.kill()
    proc.wait()
    killed = only_run_dir(tmp_path / "runs")
    again = nanogpt("run", str(spec))
    assert again.returncode == 0, again.stderr
    assert "auto_resume: continuing" in again.stdout
    assert run_dirs(tmp_path / "runs") == [killed]
    m = manifest_of(killed)
    assert m["status"] == "completed" and len(m["resumes"]) == 1
    assert losses(killed) == losses(constant_lr_reference.dir)
    # completed: never taken up again
    assert nanogpt("run", str(spec), "train.max_iters=10", "train.eval_interval=5").returncode == 0
    assert len(run_dirs(tmp_path / "runs")) == 2


@pytest.mark.slow
def test_auto_resume_never_takes_a_run_a_live_process_holds(tmp_path: Path):
    """A second `run SPEC` with auto_resume while the first is training starts its own run."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.05},
                     train={"auto_resume": True})
    first = popen_run(str(spec))
    runs = tmp_path / "runs" / "tiny"
    try:
        wait_for(lambda: runs.exists() and any(runs.glob("*/manifest.json")), what="the first run's dir")
        second = nanogpt("run", str(spec), "train.max_iters=5", "train.eval_interval=5")
        assert second.returncode == 0, second.stderr
        assert "auto_resume: continuing" not in second.stdout
        assert len(run_dirs(tmp_path / "runs")) == 2
    finally:
        first.kill()
        first.wait()


@pytest.mark.slow
def test_auto_resume_skips_other_specs_and_nan_failures(tmp_path: Path):
    """Only a run of the same spec (up to what a resume may change) that did not end on a NaN is continued."""
    from nanogpt.runs.manifest import find_resumable
    from nanogpt.config.load import load_spec

    spec = tiny_spec(tmp_path, train={"auto_resume": True})
    assert main(["run", str(spec), "train.max_iters=10", "train.eval_interval=5"]) == 0
    run = only_run_dir(tmp_path / "runs")
    m = manifest_of(run)
    m["status"] = "interrupted"
    write_manifest(run, m)
    same, _ = load_spec(spec, ["train.max_iters=80"])  # a resume may change max_iters
    found = find_resumable(same)
    assert found is not None and found[0] == run
    found[1].release()
    other, _ = load_spec(spec, ["optimizer.lr=0.1"])
    assert find_resumable(other) is None
    m.update(status="failed", failure="nonfinite")
    write_manifest(run, m)
    assert find_resumable(same) is None


# ------------------------------------------------------------------------------------ signals


def catches_sigterm(pid: int) -> bool:
    """Whether the process has a SIGTERM handler yet (/proc/PID/status, SigCgt: bit 15 - 1)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc to see when the handler is in place")
@pytest.mark.parametrize("delay", [0.0, 0.1, 0.3, 0.6, 1.0, 1.5, 2.0, 2.5, 3.5, 5.0])
@pytest.mark.slow
def test_sigterm_at_any_moment_ends_with_130_and_never_running(tmp_path: Path, delay: float):
    """SIGTERM at any moment once the product's first line runs (importing torch and the rest,
    preparing data, building the model, training) exits 130 without a traceback; the run dir, if one
    was made, says `interrupted`. (Before that the interpreter itself is starting: SIGTERM's default.)"""
    # 200 steps of at least 0.05 s: training outlasts the longest delay even on a quiet machine (at 40
    # steps a fast start finished the run before the 5 s signal, and the test saw exit 0)
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.05},
                     train={"max_iters": 200})
    proc = popen_run(str(spec))
    wait_for(lambda: catches_sigterm(proc.pid), timeout=30, what="the first handler")
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in err
    runs = tmp_path / "runs" / "tiny"
    for run in run_dirs(tmp_path / "runs") if runs.exists() else []:
        assert manifest_of(run)["status"] == "interrupted"


@pytest.mark.slow
def test_sigterm_while_preparing_leaves_no_partial_dataset(tmp_path: Path):
    """SIGTERM while the dataset's token files are half made: exit 130 at once, and neither the
    temporary files nor a meta.json nor a run dir is left behind."""
    spec = tiny_spec(tmp_path, extra='plugins = ["slow_prepare"]')
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", str(spec)],
        env=env_with_plugins(SLOW_PREPARE_SECONDS="0", SLOW_PREPARE_AFTER_WRITE="60"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    data = tmp_path / "data" / "tiny_char"
    wait_for(lambda: data.exists() and any(data.glob(".train*.bin.*.tmp")), what="half-made token files")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    assert sorted(p.name for p in data.iterdir()) == []
    assert not (tmp_path / "runs").exists() or run_dirs(tmp_path / "runs") == []


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_and_records_it(tmp_path: Path):
    """Ctrl-C asks for a checkpoint; a second Ctrl-C while it is being written ends the process at once
    with exit 130, the run marked `interrupted` (not `running`) and no partial checkpoint listed."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults", "slow_save"]', schedule={"kind": "sleep", "seconds": 0.05})
    marker = tmp_path / "writing"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", str(spec)],
        env=env_with_plugins(SLOW_SAVE_AT_STEP="interrupt", SLOW_SAVE_MARKER=str(marker)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    runs = tmp_path / "runs" / "tiny"
    wait_for(lambda: runs.exists() and any(runs.glob("*/checkpoints/ckpt-00000010.pt")), what="the first checkpoint")
    proc.send_signal(signal.SIGINT)
    wait_for(marker.exists, what="the interrupt's checkpoint to be half written")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    m = manifest_of(only_run_dir(tmp_path / "runs"))
    assert m["status"] == "interrupted" and "second Ctrl-C" in m["error"]
    assert all((only_run_dir(tmp_path / "runs") / e["path"]).is_file() for e in m["checkpoints"])


@pytest.mark.slow
def test_sigterm_during_a_long_evaluation_is_honoured_within_seconds(tmp_path: Path):
    """An evaluation of 200,000 batches does not hold up SIGTERM: the run checkpoints the last completed
    step and exits 130 within a few seconds."""
    spec = tiny_spec(tmp_path, train={"eval_iters": 200_000})
    proc = popen_run(str(spec))
    runs = tmp_path / "runs" / "tiny"
    wait_for(lambda: runs.exists() and any(runs.glob("*/manifest.json")), what="the run dir")
    time.sleep(1.0)  # well inside the first evaluation
    start = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    finally:
        proc.kill()
    assert time.time() - start < 10
    assert proc.returncode == 130
    run = only_run_dir(tmp_path / "runs")
    m = manifest_of(run)
    assert m["status"] == "interrupted" and [e["step"] for e in m["checkpoints"]] == [0]


@pytest.mark.slow
def test_a_closed_console_does_not_stop_a_run(tmp_path: Path):
    """`nanogpt run SPEC | head -3`: the run outlives its console, completes and exits 0."""
    spec = tiny_spec(tmp_path, train={"max_iters": 20})
    proc = popen_run(str(spec))
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "BrokenPipeError" not in err and "Traceback" not in err
    m = manifest_of(only_run_dir(tmp_path / "runs"))
    assert m["status"] == "completed" and m["metrics"]["iter"] == 20


def test_nan_at_the_first_iteration_says_no_checkpoint_was_kept(tmp_path: Path):
    """A NaN before any checkpoint does not claim a last good checkpoint is kept."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "nan_at", "iteration": 0})
    proc = nanogpt("run", str(spec))
    assert proc.returncode == 1
    assert "had saved no checkpoint yet" in proc.stderr and "last good checkpoint" not in proc.stderr
    m = manifest_of(only_run_dir(tmp_path / "runs"))
    assert m["status"] == "failed" and m["failure"] == "nonfinite"


@pytest.mark.slow
def test_resume_below_the_iteration_reached_is_refused(tmp_path: Path, stopped_at_30: Path):
    """--resume with train.max_iters under the run's iteration says so (exit 2) and changes nothing."""
    run = stopped_run(tmp_path, stopped_at_30)
    before = (run / "manifest.json").read_text()
    proc = nanogpt("run", "--resume", str(run), "train.max_iters=10")
    assert proc.returncode == 2
    assert "is at iteration 30" in proc.stderr and "train.max_iters = 10" in proc.stderr
    assert (run / "manifest.json").read_text() == before


# ------------------------------------------------------------------------ corrupt dataset records


@pytest.mark.parametrize(
    "edit, named",
    [
        (lambda m: m["train"].update(tokens="abc"), "train.tokens"),
        (lambda m: m.update(vocab_size=None), "vocab_size"),
        (lambda m: m.update(vocab_size=5), "vocab_size: must be the number of chars"),
        (lambda m: m.update(chars=None), "chars"),
        (lambda m: m["val"].update(sha256=7), "val.sha256"),
        (lambda m: m.update(dtype="float64"), "dtype"),
        (lambda m: m["source"].update(files=5), "source.files"),
        (lambda m: m.update(train=[]), "train"),
    ],
)
def test_corrupt_meta_json_is_a_clear_error(tmp_path: Path, edit, named: str):
    """meta.json with wrong types or values is refused at open naming the field (no traceback), and
    `prepare` rebuilds it."""
    from nanogpt.data.files import open_dataset
    from nanogpt.data.prepare import prepare
    from nanogpt.errors import DataError
    from nanogpt.config.load import load_spec

    spec = tiny_spec(tmp_path)
    exp, _ = load_spec(spec)
    prepare(exp.data, say=lambda line: None)
    meta_path = tmp_path / "data" / "tiny_char" / "meta.json"
    meta = json.loads(meta_path.read_text())
    edit(meta)
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(DataError, match="not a valid dataset record") as e:
        open_dataset(exp.data)
    assert named in str(e.value)
    lines: list[str] = []
    prepare(exp.data, say=lines.append)
    assert lines and lines[0].startswith("preparing")
    assert open_dataset(exp.data).vocab_size == json.loads(meta_path.read_text())["vocab_size"]


def test_dataset_of_another_tokenizer_is_refused(tmp_path: Path):
    """A spec without data.source naming a char dataset as gpt2 is refused, not trained with the wrong record."""
    spec = tiny_spec(tmp_path)
    assert main(["prepare", str(spec)]) == 0
    other = tiny_spec(tmp_path, name="other", data={"source": None, "tokenizer": "gpt2"})
    other.write_text(other.read_text().replace("source = null\n", ""))
    proc = nanogpt("run", str(other))
    assert proc.returncode == 1
    assert "was tokenized with 'char', but the spec says data.tokenizer = 'gpt2'" in proc.stderr


# ------------------------------------------------------------------------------ foreign files


@pytest.mark.parametrize(
    "hostile",
    [
        {"metrics": "oops"},
        {"name": ["x"]},
        {"status": {"a": 1}},
        {"metrics": {"iter": 10**400, "best_val_loss": "low", "tokens_per_sec": float("inf")}},
        "deep",
    ],
)
def test_runs_and_diff_survive_foreign_manifests(tmp_path: Path, capsys, hostile):
    """One odd manifest never costs the `runs` table its other rows, and `diff` of it never raises."""
    good = tmp_path / "runs" / "good" / "1"
    bad = tmp_path / "runs" / "bad" / "2"
    for d in (good, bad):
        d.mkdir(parents=True)
    base = {"schema_version": 1, "name": "good", "run_id": "1", "status": "completed", "spec": {"seed": 1},
            "metrics": {"iter": 10, "best_val_loss": 1.5}}
    (good / "manifest.json").write_text(json.dumps(base))
    if hostile == "deep":
        (bad / "manifest.json").write_text('{"schema_version": 1, "spec": {}, "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    else:
        (bad / "manifest.json").write_text(json.dumps({**base, **hostile}))
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "good" in out and "1.5000" in out
    assert main(["diff", str(good), str(bad)]) in (0, 1, 2)  # whatever it finds, it returns


def test_a_fifo_named_manifest_never_blocks(tmp_path: Path):
    """A FIFO called manifest.json is skipped by `runs` and refused by `diff`, at once."""
    bad = tmp_path / "runs" / "x" / "1"
    bad.mkdir(parents=True)
    os.mkfifo(bad / "manifest.json")
    for args in (["runs", str(tmp_path / "runs")], ["diff", str(bad), str(bad)]):
        proc = subprocess.run([sys.executable, "-m", "nanogpt", *args], capture_output=True, text=True, timeout=30)
        assert "not a regular file" in proc.stderr
        assert proc.returncode == (0 if args[0] == "runs" else 2)
