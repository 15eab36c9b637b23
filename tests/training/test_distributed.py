"""The guarantees, proven with real processes on CPU (gloo): kills, resumes, torchrun, two nodes, failures."""

from __future__ import annotations

import json
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.tinyrun import env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec

pytestmark = pytest.mark.slow

SLOW = {"kind": "sleep", "seconds": 0.03}  # a constant lr that leaves time to kill the run mid-way


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_run(spec: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "nanogpt", "run", str(spec), *extra],
        env=env or env_with_plugins(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def logged_iters(runs: Path) -> int:
    found = list(runs.glob("tiny/*/metrics.jsonl"))
    if not found:
        return -1
    lines = [json.loads(x) for x in found[0].read_text().splitlines() if x.endswith("}")]
    return max((r["iter"] for r in lines if r["kind"] == "train"), default=-1)


def torchrun(*args: str, env: dict[str, str] | None = None) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", *args]


@pytest.fixture
def straight(constant_lr_reference) -> Path:
    """The uninterrupted reference run of the slow constant-lr tiny spec (shared by the session: read only)."""
    return constant_lr_reference.dir


def test_sigkill_then_resume_is_bit_identical(tmp_path: Path, straight: Path):
    """SIGKILL at a random iteration after the first checkpoint, then --resume: same losses and weights."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule=SLOW)
    kill_after = random.Random().randint(11, 38)
    proc = start_run(spec)
    wait_for(lambda: logged_iters(tmp_path / "runs") >= kill_after, what=f"iteration {kill_after}")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = only_run_dir(tmp_path / "runs")
    assert json.loads((run / "manifest.json").read_text())["status"] == "running"  # killed: no chance to say
    nanogpt("run", "--resume", str(run), check=True)
    assert json.loads((run / "manifest.json").read_text())["status"] == "completed"
    assert losses(run) == losses(straight), f"killed after iteration {kill_after}"
    assert same_weights(final_weights(run), final_weights(straight))


def test_sigkill_while_writing_a_checkpoint(tmp_path: Path, straight: Path):
    """Killed half-way through writing a checkpoint: the previous one still loads and the resume is exact."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults", "slow_save"]', schedule=SLOW)
    marker = tmp_path / "writing"
    proc = start_run(spec, env=env_with_plugins(SLOW_SAVE_AT_STEP="20", SLOW_SAVE_MARKER=str(marker)))
    wait_for(marker.exists, what="the checkpoint of step 20 to be half written")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    run = only_run_dir(tmp_path / "runs")
    leftovers = list((run / "checkpoints").glob(".ckpt-00000020.pt.*"))
    assert leftovers, "the half-written checkpoint should be a temporary file"
    assert not (run / "checkpoints" / "ckpt-00000020.pt").exists()
    from nanogpt.checkpoints.catalog import checkpoint_for
    from nanogpt.checkpoints.state import load_checkpoint

    previous = checkpoint_for(run, "latest")
    assert previous.name == "ckpt-00000010.pt" and load_checkpoint(previous)["iter"] == 10
    nanogpt("run", "--resume", str(run), check=True)
    assert not list((run / "checkpoints").glob(".ckpt-*")), "the resume cleans up the torn file"
    assert losses(run) == losses(straight)
    assert same_weights(final_weights(run), final_weights(straight))


def test_torchrun_two_processes_match_one(tmp_path: Path):
    """torchrun --nproc_per_node=2 trains on the same global batches as one process: losses agree to 1e-5."""
    one = tiny_spec(tmp_path, name="one", train={"max_iters": 20, "eval_interval": 10})
    two = tiny_spec(tmp_path, name="two", train={"max_iters": 20, "eval_interval": 10})
    nanogpt("run", str(one), check=True)
    proc = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=2", "-m", "nanogpt.run", str(two)),
        env=env_with_plugins(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-8000:]
    a, b = losses(only_run_dir(tmp_path / "runs", "one")), losses(only_run_dir(tmp_path / "runs", "two"))
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for ra, rb in zip(a, b):
        for x, y in zip(ra[2:], rb[2:]):
            assert y == pytest.approx(x, rel=1e-5), (ra, rb)
    m = json.loads((only_run_dir(tmp_path / "runs", "two") / "manifest.json").read_text())
    assert m["hardware"]["world_size"] == 2 and m["status"] == "completed"


def test_indivisible_grad_accum_is_a_clear_error(tmp_path: Path):
    """grad_accum that the world size does not divide stops before any work (no data prepared, no
    run dir) with the spec's report, printed once for the job, not once per process; what else
    is on stderr is torchrun's own summary of the failed job."""
    spec = tiny_spec(tmp_path, train={"grad_accum": 3})
    proc = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=2", "-m", "nanogpt.run", str(spec)),
        env=env_with_plugins(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    report = (
        f"{spec}: 1 problem\n  train.grad_accum: 3 must be divisible by the number of processes (2): it counts "
        "micro-batches over all of them, so that the global batch is the same on any number of processes\n"
    )
    assert proc.stderr.startswith(report) and proc.stderr.count("must be divisible") == 1, proc.stderr
    assert not re.search(r'File ".*/nanogpt/\w+(/\w+)*\.py"', proc.stderr)  # no traceback through our code: torchrun's only
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_two_nodes_on_loopback(tmp_path: Path):
    """Two torchrun "nodes" joined by a c10d rendezvous on 127.0.0.1 complete a short run."""
    spec = tiny_spec(tmp_path, train={"max_iters": 10, "eval_interval": 10})
    port = free_port()
    common = ["--nnodes=2", "--nproc_per_node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=nodes"]
    nodes = [
        subprocess.Popen(
            torchrun(*common, f"--node_rank={rank}", "-m", "nanogpt.run", str(spec)),
            env=env_with_plugins(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    outs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outs]
    m = json.loads((only_run_dir(tmp_path / "runs") / "manifest.json").read_text())
    assert m["status"] == "completed" and m["hardware"]["world_size"] == 2


def test_one_rank_failing_fails_the_job_promptly(tmp_path: Path):
    """A rank that raises makes the whole job exit non-zero within 60 s, and the manifest says failed and which rank."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule={"kind": "raise_at", "iteration": 3, "rank": 1})
    t0 = time.time()
    proc = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=2", "-m", "nanogpt.run", str(spec)),
        env=env_with_plugins(), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert time.time() - t0 < 60
    m = json.loads((only_run_dir(tmp_path / "runs") / "manifest.json").read_text())
    assert m["status"] == "failed" and "rank 1" in m["error"] and "injected failure" in m["error"]


def test_sigterm_checkpoints_and_exits(tmp_path: Path):
    """SIGTERM, as a scheduler sends before killing, saves a checkpoint and exits 130 with the run interrupted."""
    spec = tiny_spec(tmp_path, extra='plugins = ["faults"]', schedule=SLOW)
    proc = start_run(spec)
    wait_for(lambda: logged_iters(tmp_path / "runs") >= 15, what="iteration 15")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "nanogpt run --resume" in out and "Traceback" not in err
    run = only_run_dir(tmp_path / "runs")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    assert max(e["step"] for e in m["checkpoints"]) == m["metrics"]["iter"]


def test_torchrun_restart_resumes_by_itself(tmp_path: Path, straight: Path):
    """With train.auto_resume, torchrun --max-restarts brings a failed job back from its latest checkpoint."""
    spec = tiny_spec(
        tmp_path, extra='plugins = ["faults"]', schedule={"kind": "fail_once", "iteration": 13, "rank": 0},
        train={"auto_resume": True},
    )
    proc = subprocess.run(
        torchrun("--standalone", "--nproc_per_node=1", "--max-restarts=1", "-m", "nanogpt.run", str(spec)),
        env=env_with_plugins(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = only_run_dir(tmp_path / "runs")
    m = json.loads((run / "manifest.json").read_text())
    assert m["status"] == "completed" and m["launcher"]["restart_count"] == 1
    assert len(m.get("resumes", [])) == 1
    assert losses(run) == losses(straight)
    assert same_weights(final_weights(run), final_weights(straight))
