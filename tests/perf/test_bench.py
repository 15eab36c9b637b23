"""The `bench` verb on tiny specs, and the GPU check's CPU dry run: what they print, never how fast."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nanogpt.cli import main
from tests.tinyrun import REPO, env_with_plugins, tiny_spec

FIGURES = ("ms_per_iter", "tokens_per_sec", "mfu", "peak_memory_bytes")


def bench(capsys, *args: str) -> tuple[int, str, str]:
    """`nanogpt bench ARGS` in this process: (exit status, stdout, stderr)."""
    status = main(["bench", *args])
    out = capsys.readouterr()
    return status, out.out, out.err


@pytest.fixture(scope="module")
def spec(tmp_path_factory) -> Path:
    """A tiny spec with 2 micro-steps per iteration (its dataset is prepared by the first bench)."""
    return tiny_spec(tmp_path_factory.mktemp("bench"))


def test_prints_every_figure(spec: Path, capsys):
    """The text report names the spec and gives ms/iter, tokens/s, MFU and peak memory."""
    status, out, _ = bench(capsys, str(spec), "--steps", "3", "--warmup", "1")
    assert status == 0
    assert out.startswith("bench tiny:")
    for label in ("ms/iter:", "tokens/s:", "MFU:", "peak mem:", "warm-up:"):
        assert label in out, (label, out)
    assert "MiB" in out and "% of" in out  # a CPU's peak is measured, so MFU has a figure


def test_json_has_the_figures(spec: Path, capsys):
    """--json prints one object whose figures agree with each other and with the spec."""
    status, out, _ = bench(capsys, str(spec), "--steps", "2", "--warmup", "0", "--json")
    assert status == 0
    r = json.loads(out)
    assert set(FIGURES) <= r.keys()
    assert r["tokens_per_iter"] == 4 * 32 * 2  # batch_size x block_size x grad_accum of tiny_spec
    assert r["steps"] == 2 and r["warmup_steps"] == 0 and r["synthetic"] is False
    assert r["ms_per_iter"] > 0 and r["ms_per_iter_min"] <= r["ms_per_iter"]
    assert r["tokens_per_sec"] == pytest.approx(r["tokens_per_iter"] / (r["ms_per_iter"] / 1000))
    assert r["peak_tflops_source"] == "measured" and 0 < r["mfu"]
    assert r["peak_memory_bytes"] > 2**20
    assert math.isfinite(r["last_loss"])  # neither NaN nor ±inf (approx(x) == x holds for inf)


def test_overrides_reach_the_step(spec: Path, capsys):
    """Overrides after the spec change what is timed (here the micro-steps per iteration)."""
    status, out, _ = bench(capsys, str(spec), "train.grad_accum=1", "--steps", "1", "--warmup", "0", "--json")
    assert status == 0
    assert json.loads(out)["tokens_per_iter"] == 4 * 32


def test_synthetic_needs_no_dataset(tmp_path: Path, capsys):
    """--synthetic times the step on random tokens, reading and preparing no data at all."""
    missing = tmp_path / "no-such-corpus.txt"
    spec = tiny_spec(tmp_path, data={"source": f"file:{missing}"})
    (tmp_path / "corpus.txt").unlink()
    status, out, _ = bench(capsys, str(spec), "--synthetic", "--steps", "2", "--warmup", "1", "--json")
    assert status == 0
    r = json.loads(out)
    assert r["synthetic"] is True and set(FIGURES) <= r.keys()
    assert not (tmp_path / "data").exists()
    # the same spec without --synthetic fails on its data, as a user error without a traceback
    status, _, err = bench(capsys, str(spec), "--steps", "1")
    assert status in (1, 2) and "no-such-corpus" in err and "Traceback" not in err


def test_profile_writes_a_trace(spec: Path, tmp_path: Path, capsys):
    """--profile DIR leaves a Chrome/Perfetto trace (.pt.trace.json with traceEvents) that TensorBoard's plugin lists."""
    trace_dir = tmp_path / "trace"
    status, out, _ = bench(capsys, str(spec), "--steps", "3", "--warmup", "1", "--profile", str(trace_dir))
    assert status == 0 and str(trace_dir) in out
    traces = list(trace_dir.glob("*.pt.trace.json"))
    assert len(traces) == 1, list(trace_dir.iterdir())
    events = json.loads(traces[0].read_text())["traceEvents"]
    assert any(e.get("ph") == "X" and "aten::" in e.get("name", "") for e in events)  # real op spans


@pytest.mark.parametrize(
    "flags",
    [["--steps", "0"], ["--warmup", "-1"], ["--steps", "many"], ["--bogus"], []],
    ids=["zero-steps", "negative-warmup", "non-integer", "unknown-flag", "no-spec"],
)
def test_bad_flags_exit_2(spec: Path, flags: list[str], capsys):
    """A bad flag or a missing spec is a usage error: exit status 2 and a message, no traceback."""
    args = [str(spec), *flags] if flags else []
    try:
        status = main(["bench", *args])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    err = capsys.readouterr().err
    assert status == 2
    assert err.strip() and "Traceback" not in err


@pytest.mark.slow
def test_gpu_check_dry_run():
    """benchmarks/gpu_check.py without CUDA (or with --dry-run) runs every section on tiny sizes and prints its tables."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run"],
        capture_output=True, text=True, timeout=600, env=env_with_plugins(), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "CPU dry run" in out and "FLOPs/token = 6N + 12*L*H*Q*T" in out
    header = next(line for line in out.splitlines() if line.startswith("configuration"))
    for column in ("ms/iter", "tokens/s", "MFU", "peak mem"):
        assert column in header
    for row in ("ours eager bf16", "seed rewrite eager bf16", "nanoGPT-today rewrite eager bf16", "llama eager bf16", "speedrun recipe eager bf16",
                "no .item() per step", "math SDPA",
                "AdamW foreach", "TF32 off", "not padded"):
        assert row in out, row
    assert "ours / seed, tokens/s:" in out and "fast paths" in out
    assert "ours vs the nanoGPT-today rewrite, both at" in out and "the seed without its per-step .item()" in out
    assert "checkpoint stall (ours," in out and "background writer" in out
    assert "pinned memory the checkpoint writer keeps: 0.000 GiB" in out  # the state is on the CPU
    runner = next(line for line in out.splitlines() if line.startswith("runner loop (fsdp)"))
    assert "completed at iteration 8 after 1 resume" in runner and "recompile limit hit: no" in runner, runner
    assert "host syncs in the training step: not checked (no CUDA" in out
    sections = out.split("\nsections:\n")[1].splitlines()
    # the eager sections come before any compiled one, so a spent budget skips only compiled rows
    assert [line.split(":")[0].strip() for line in sections[:5]] == [
        "checkpoint stall", "memory", "fast paths (eager)", "host syncs", "runner loop"]
    assert "not measured)" not in out.split("ours / seed")[0]  # every row of the table has its figures
    assert "FAILED" not in out and "TIMED OUT" not in out and "skipped" not in out


@pytest.mark.slow
def test_runner_vs_bare_runs(tmp_path: Path):
    """benchmarks/runner_vs_bare.py runs the real runner and the bare loop and prints both medians and their ratio."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "runner_vs_bare.py"), "--config", "quickstart", "--rounds", "1",
         "--iters", "41", "--override", "train.log_interval=20", "--work-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, env=env_with_plugins(), check=False,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 1: over the target, on a noisy machine
    assert "runner / bare:" in proc.stdout and "median over 2 windows" in proc.stdout
    assert len(list((tmp_path / "runs" / "shakespeare_char").iterdir())) == 1  # the runner's real run dir


WORKSPACE_AT_FIRST_OP = '''
import os, runpy, sys
from torch.utils._python_dispatch import TorchDispatchMode

os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


class FirstOp(BaseException):
    pass


class StopAtFirstOp(TorchDispatchMode):
    """Ends the script at its first tensor operation, reporting CUBLAS_WORKSPACE_CONFIG as it was then."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        raise FirstOp(f"{func} {os.environ.get('CUBLAS_WORKSPACE_CONFIG')}")


sys.argv = [sys.argv[1], "--dry-run"]
try:
    with StopAtFirstOp():
        runpy.run_path(sys.argv[0], run_name="__main__")
except FirstOp as e:
    print("FIRST-OP", e)
'''


def test_gpu_check_fixes_the_cublas_workspace_before_any_tensor_work(tmp_path: Path):
    """cuBLAS reads CUBLAS_WORKSPACE_CONFIG at the process's first handle: the GPU check must set it before
    its first tensor operation (on a GPU, the first matmul), not just before its deterministic row."""
    script = tmp_path / "first_op.py"
    script.write_text(WORKSPACE_AT_FIRST_OP, encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(REPO / "benchmarks" / "gpu_check.py")],
        capture_output=True, text=True, timeout=300, env=env_with_plugins(), check=False,
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("FIRST-OP")), None)
    assert line is not None, proc.stdout + proc.stderr
    op, workspace = line.split()[1:]
    assert workspace == ":4096:8", f"the first tensor operation ({op}) ran with CUBLAS_WORKSPACE_CONFIG unset"


@pytest.mark.slow
def test_tokens_to_target_runs():
    """benchmarks/tokens_to_target.py tunes both recipes, trains the seeds and prints steps to the target, the
    losses at equal steps, the step cost and where it goes, all from real runs (tiny ones here)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "tokens_to_target.py"), "--iters", "30", "--eval-interval", "10",
         "--eval-iters", "2", "--log-interval", "10", "--seeds", "2"],
        capture_output=True, text=True, timeout=900, env=env_with_plugins(), check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.count("seed 1: final val loss") == 8 and out.count("seed 2: final val loss") == 2
    assert "best adamw: lr" in out and "best modern: lr" in out
    assert re.search(r"target: the AdamW recipe's final validation loss, \d\.\d{4} \(mean of 2 seeds\)", out)
    assert re.search(r"modern / adamw: (steps \(and tokens\) \d\.\d\dx|not every modern seed)", out)
    assert re.search(r"modern / adamw = \d\.\d\dx", out) and "Newton-Schulz is 2.35 GFLOP a step" in out
