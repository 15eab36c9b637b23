"""Sweeps with real processes: interrupted and resumed, members in a job array's parallel tasks, a
failing member, members under torchrun, and sweep.json kept whole under concurrent updates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from nanogpt.runs.sweeps.launch import Slot, build_slots, member_env
from nanogpt.runs.sweeps.record import SweepRecord
from nanogpt.runs.runlock import is_held
from tests.tinyrun import REPO, env_with_plugins, losses, nanogpt, tiny_spec

pytestmark = pytest.mark.slow

SLOW = {"kind": "sleep", "seconds": 0.03}  # a constant lr that leaves time to signal a member mid-way
AXES = ("optimizer.lr=1e-3,3e-3", "model.n_layer=1,2")


def start_sweep(*args: str, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "sweep", *args], env=env_with_plugins(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, **popen,
    )


def sweep_dir(runs: Path, name: str = "tiny") -> Path:
    dirs = list((runs / name / "sweeps").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def record(directory: Path) -> dict[str, Any]:
    return json.loads((directory / "sweep.json").read_text())


def member_run(directory: Path, index: int) -> Path:
    return SweepRecord(directory).run_dir_of(record(directory)["members"][index])


def run_dirs(runs: Path, name: str = "tiny") -> list[Path]:
    return sorted(d for d in (runs / name).iterdir() if d.is_dir() and d.name != "sweeps" and not d.name.startswith("."))


def wait_for(condition, timeout: float = 120.0, proc: subprocess.Popen | None = None, what: str = "") -> None:
    deadline = time.time() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the sweep ended first (exit {proc.returncode}):\n{proc.stdout.read()}")
        if time.time() > deadline:
            raise AssertionError(f"timed out{': ' + what if what else ''}")
        time.sleep(0.05)


def training(directory: Path, index: int, iterations: int) -> bool:
    """Whether member `index` is running and has logged `iterations` training steps."""
    try:
        m = record(directory)["members"][index]
    except (OSError, ValueError, IndexError):
        return False
    if m["status"] != "running" or not m["run_dir"]:
        return False
    metrics = directory / m["run_dir"] / "metrics.jsonl"
    return metrics.exists() and sum('"train"' in line for line in metrics.read_text().splitlines()) >= iterations


# ------------------------------------------------------------------- interrupt and resume


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict[str, Any]:
    """A 4-member sweep (optimizer.lr x model.n_layer) stopped by SIGINT in its second member, then resumed."""
    tmp = tmp_path_factory.mktemp("sweep")
    spec = tiny_spec(tmp, extra='plugins = ["faults"]', schedule=SLOW, train={"max_iters": 30, "eval_interval": 10, "log_interval": 1})
    proc = start_sweep(str(spec), *AXES)
    wait_for(lambda: (tmp / "runs" / "tiny" / "sweeps").is_dir() and training(sweep_dir(tmp / "runs"), 1, 3), proc=proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    directory = sweep_dir(tmp / "runs")
    state = {"spec": spec, "runs": tmp / "runs", "dir": directory, "code": proc.returncode, "out": out,
             "record": record(directory), "run_dirs": run_dirs(tmp / "runs")}
    first = member_run(directory, 0)
    state["first_before"] = {f: (first / f).read_bytes() for f in ("manifest.json", "metrics.jsonl")}
    state["second_manifest"] = json.loads((member_run(directory, 1) / "manifest.json").read_text())
    state["resumed"] = nanogpt("sweep", "--resume", str(directory))
    state["after"] = record(directory)
    return state


@pytest.mark.slow
def test_sigint_stops_the_running_member_cleanly(interrupted):
    """SIGINT during the second member: it checkpoints and ends `interrupted`, the sweep is `interrupted`, exit 130."""
    assert interrupted["code"] == 130, interrupted["out"]
    rec = interrupted["record"]
    assert rec["status"] == "interrupted"
    assert [m["status"] for m in rec["members"]] == ["completed", "interrupted", "pending", "pending"]
    second = interrupted["second_manifest"]
    assert second["status"] == "interrupted" and second["checkpoints"]
    assert second["sweep"] == {"id": rec["id"], "index": 1, "values": {"optimizer.lr": 0.001, "model.n_layer": 2}}
    assert "SIGINT received: stopping 1 running member(s)" in interrupted["out"]
    assert "Traceback" not in interrupted["out"]
    assert len(interrupted["run_dirs"]) == 2


def test_resume_finishes_without_retraining_the_first(interrupted):
    """`sweep --resume` leaves the completed member alone, resumes the interrupted one in place, runs the rest."""
    done = interrupted["resumed"]
    assert done.returncode == 0, done.stdout + done.stderr
    after = interrupted["after"]
    assert after["status"] == "completed" and [m["status"] for m in after["members"]] == ["completed"] * 4
    directory = interrupted["dir"]
    first = member_run(directory, 0)
    assert {f: (first / f).read_bytes() for f in ("manifest.json", "metrics.jsonl")} == interrupted["first_before"]
    second = member_run(directory, 1)
    assert second == interrupted["run_dirs"][1] or second in interrupted["run_dirs"]
    manifest = json.loads((second / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["metrics"]["iter"] == 30 and len(manifest["resumes"]) == 1
    assert len(run_dirs(interrupted["runs"])) == 4
    assert "resuming member 1 " in done.stdout and "starting member 0 " not in done.stdout


def test_the_resumed_member_trains_what_an_uninterrupted_run_does(interrupted, tmp_path):
    """The member stopped mid-way and resumed logs the same losses as the same spec run without a stop."""
    spec = interrupted["spec"]
    ref = nanogpt("run", str(spec), "optimizer.lr=0.001", "model.n_layer=2", f"logging.out_dir={tmp_path}", check=True)
    assert ref.returncode == 0
    (ref_dir,) = [d for d in (tmp_path / "tiny").iterdir()]
    assert losses(member_run(interrupted["dir"], 1)) == losses(ref_dir)


def test_members_carry_swept_keys_and_the_sweep_in_their_hparams(interrupted):
    """TensorBoard's HParams data of a member names the swept keys with its values, and the sweep's id and index."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    run = member_run(interrupted["dir"], 2)
    acc = EventAccumulator(str(run))
    acc.Reload()
    content = acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert hparams["optimizer.lr"].number_value == 0.003 and hparams["model.n_layer"].number_value == 1
    assert hparams["sweep.id"].string_value == interrupted["record"]["id"] and hparams["sweep.index"].number_value == 2


def test_a_completed_spec_is_not_trained_again_unless_rerun(interrupted):
    """A new sweep of the same members reuses their completed runs (their run ids differ); --rerun trains one again."""
    before = run_dirs(interrupted["runs"])
    again = nanogpt("sweep", str(interrupted["spec"]), *AXES, "logging.tensorboard=false")
    assert again.returncode == 0, again.stdout + again.stderr
    assert run_dirs(interrupted["runs"]) == before
    assert again.stdout.count("a completed run has the same spec") == 4
    rerun = nanogpt("sweep", str(interrupted["spec"]), "optimizer.lr=1e-3", "model.n_layer=1", "--rerun")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert len(run_dirs(interrupted["runs"])) == len(before) + 1


def test_a_sigkilled_sweeps_members_finish_and_resume_finds_them_completed(tmp_path):
    """README: "If the sweep process itself is killed with SIGKILL, running members finish on their own
    (they are in their own sessions); `--resume` then finds them completed." Two members mid-way when
    the sweep's process group is SIGKILLed finish (no resume of theirs, every iteration), and `sweep --resume` leaves
    both alone, byte for byte, trains the two never started, and ends with all four completed."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "sleep", "seconds": 0.1},
                     train={"max_iters": 30, "eval_interval": 10, "log_interval": 1})
    proc = start_sweep(str(spec), *AXES, "--jobs", "2", start_new_session=True)
    runs = tmp_path / "runs"
    try:
        wait_for(lambda: (runs / "tiny" / "sweeps").is_dir() and training(sweep_dir(runs), 0, 3)
                 and training(sweep_dir(runs), 1, 3), proc=proc)
    finally:
        # SIGKILL to the sweep's whole process group, as a shell's job control or a batch system
        # sends it: only members in sessions of their own outlive it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    directory = sweep_dir(runs)
    at_kill = record(directory)
    assert [m["status"] for m in at_kill["members"]] == ["running", "running", "pending", "pending"]
    members = [member_run(directory, i) for i in (0, 1)]
    # (the members are still writing: a last line may be half there)
    reached = [max(json.loads(line)["iter"] for line in (d / "metrics.jsonl").read_text().splitlines() if line.endswith("}"))
               for d in members]
    assert all(r < 30 for r in reached), f"a member had finished before the kill: {reached}"

    def finished(run: Path) -> bool:
        return json.loads((run / "manifest.json").read_text())["status"] != "running"

    wait_for(lambda: all(map(finished, members)), timeout=120,
             what="the killed sweep's members to finish (did they die with it? their manifests still say running)")
    for run in members:
        m = json.loads((run / "manifest.json").read_text())
        assert m["status"] == "completed" and m["metrics"]["iter"] == 30 and not m.get("resumes"), m
        assert [r[0] for r in losses(run) if r[1] == "train"] == list(range(30))
    # the run dirs' locks go with the members' processes: wait for those to end too
    wait_for(lambda: not any(is_held(run) for run in members), timeout=60)
    before = {run: {f: (run / f).read_bytes() for f in ("manifest.json", "metrics.jsonl")} for run in members}

    resumed = nanogpt("sweep", "--resume", str(directory))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = record(directory)
    assert after["status"] == "completed" and [m["status"] for m in after["members"]] == ["completed"] * 4
    for i, run in enumerate(members):
        assert member_run(directory, i) == run
        assert {f: (run / f).read_bytes() for f in ("manifest.json", "metrics.jsonl")} == before[run]
        assert f"member {i} " in resumed.stdout and f"completed already ({run})" in resumed.stdout
        assert f"starting member {i} " not in resumed.stdout and f"resuming member {i} " not in resumed.stdout
    assert "starting member 2 " in resumed.stdout and "starting member 3 " in resumed.stdout
    assert len(run_dirs(runs)) == 4


# ---------------------------------------------------------------------------- job arrays


def test_index_from_two_processes_at_once(tmp_path):
    """Two tasks of a job array run members 0 and 1 of one named sweep at once; sweep.json stays whole and
    records both; a third task for a member that runs already is refused (exit 2); --resume then finishes it."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule=SLOW, train={"max_iters": 20, "eval_interval": 10, "log_interval": 1})
    tasks = [start_sweep(str(spec), *AXES, "--sweep-id", "array1", "--index", str(i)) for i in (0, 1)]
    directory = tmp_path / "runs" / "tiny" / "sweeps" / "array1"
    wait_for(lambda: training(directory, 1, 2), proc=tasks[1])
    third = nanogpt("sweep", str(spec), *AXES, "--sweep-id", "array1", "--index", "1")
    assert third.returncode == 2 and "member 1 (optimizer.lr=0.001 model.n_layer=2) is left alone" in third.stdout
    outs = [t.communicate(timeout=120)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outs
    rec = record(directory)
    assert rec["id"] == "array1" and rec["status"] == "running"
    assert [m["status"] for m in rec["members"]] == ["completed", "completed", "pending", "pending"]
    for i in (0, 1):
        manifest = json.loads((member_run(directory, i) / "manifest.json").read_text())
        assert manifest["status"] == "completed" and manifest["sweep"]["id"] == "array1" and manifest["sweep"]["index"] == i
    assert len(run_dirs(tmp_path / "runs")) == 2
    done = nanogpt("sweep", "--resume", str(directory), "--jobs", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    assert record(directory)["status"] == "completed" and len(run_dirs(tmp_path / "runs")) == 4


def test_a_sweep_id_holding_other_members_is_refused(tmp_path):
    """Joining a named sweep with other members (the spec or axes changed) is exit 2, and its record is untouched."""
    spec = tiny_spec(tmp_path, train={"max_iters": 4, "eval_interval": 2, "log_interval": 1})
    assert nanogpt("sweep", str(spec), "optimizer.lr=1e-3,3e-3", "--sweep-id", "s", "--index", "0").returncode == 0
    path = tmp_path / "runs" / "tiny" / "sweeps" / "s" / "sweep.json"
    before = path.read_text()
    other = nanogpt("sweep", str(spec), "optimizer.lr=1e-3,5e-3", "--sweep-id", "s", "--index", "1")
    assert other.returncode == 2 and "holds a different sweep: its member 1 was optimizer.lr=0.003" in other.stderr
    assert path.read_text() == before


UPDATER = """
import sys
from nanogpt.runs.sweeps.record import SweepRecord
from nanogpt.runs.runlock import is_held
record, index, times = SweepRecord(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
for k in range(times):
    record.update_member(index, count=k + 1, status="running")
"""


def test_sweep_json_loses_no_update_from_concurrent_processes(tmp_path):
    """Processes updating their own members of one sweep.json at once lose none of each other's updates."""
    rec = SweepRecord(tmp_path / "s")
    n, times = 6, 25
    rec.update(lambda _: {"schema_version": 1, "id": "s", "status": "running",
                          "members": [{"index": i, "status": "pending", "values": {}} for i in range(n)]})
    procs = [subprocess.Popen([sys.executable, "-c", UPDATER, str(rec.dir), str(i), str(times)], cwd=REPO) for i in range(n)]
    assert [p.wait(timeout=120) for p in procs] == [0] * n
    assert [m["count"] for m in rec.read()["members"]] == [times] * n


# ---------------------------------------------------------------------------- failures


def test_a_failed_member_does_not_stop_the_others_and_is_reported_when_it_fails(tmp_path):
    """A member that fails is reported at once, the next member still runs, and the sweep exits 1 marked failed."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "raise_at", "iteration": 2, "rank": 0},
                     train={"max_iters": 6, "eval_interval": 3, "log_interval": 1})
    done = subprocess.run(
        [sys.executable, "-m", "nanogpt", "sweep", str(spec), "schedule.iteration=2,1000"], env=env_with_plugins(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
    )
    assert done.returncode == 1, done.stdout
    out = done.stdout
    failed_line = "sweep: member 0 (schedule.iteration=2) FAILED (exit 1): RuntimeError: injected failure at iteration 2"
    assert failed_line in out
    assert out.index(failed_line) < out.index("starting member 1 ")
    rec = record(sweep_dir(tmp_path / "runs"))
    assert rec["status"] == "failed" and [m["status"] for m in rec["members"]] == ["failed", "completed"]
    assert "injected failure at iteration 2" in rec["members"][0]["error"] and rec["members"][0]["exit_code"] == 1


# ---------------------------------------------------------------------------- slots


def test_slots_share_the_cores_or_give_each_member_its_own_gpus(monkeypatch):
    """--jobs N splits the cores (and OMP threads) among N slots; --gpus-per-run K gives each slot K GPUs of its own."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    slots = build_slots(2, None)
    assert [s.cpus for s in slots] == [(0, 1), (2, 3)]
    assert member_env(slots[1])["OMP_NUM_THREADS"] == "2" and "CUDA_VISIBLE_DEVICES" not in member_env(slots[1])
    assert build_slots(1, None) == [Slot(0)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    assert [s.gpus for s in build_slots(2, 2)] == [("4", "5"), ("6", "7")]
    assert member_env(build_slots(2, 2)[1])["CUDA_VISIBLE_DEVICES"] == "6,7"
    from nanogpt.errors import InputError

    with pytest.raises(InputError, match="--jobs 3 x --gpus-per-run 2 needs 6 GPUs; 4 are visible"):
        build_slots(3, 2)


def test_members_with_several_devices_run_under_torchrun(tmp_path):
    """With --gpus-per-run 2 each member is a 2-process torchrun job (here on CPU, gloo), recorded as a member."""
    spec = tiny_spec(tmp_path, train={"max_iters": 4, "eval_interval": 2, "log_interval": 1})
    done = nanogpt("sweep", str(spec), "optimizer.lr=1e-3,3e-3", "--gpus-per-run", "2",
                   env=env_with_plugins(CUDA_VISIBLE_DEVICES="0,1"))
    assert done.returncode == 0, done.stdout + done.stderr
    directory = sweep_dir(tmp_path / "runs")
    for i in (0, 1):
        manifest = json.loads((member_run(directory, i) / "manifest.json").read_text())
        assert manifest["hardware"]["world_size"] == 2 and manifest["sweep"]["index"] == i
        assert manifest["status"] == "completed"
