"""Resume promises, each against a run that never stopped: with dropout on, on another number of processes,
with the overrides a resume may change, with --force, and in float16 with its gradient scaler; and DDP's
one gradient all-reduce per optimizer step, counted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.tinyrun import ReferenceRun, env_with_plugins, final_weights, losses, nanogpt, only_run_dir, same_weights, tiny_spec

pytestmark = pytest.mark.slow

HALF, FULL = 20, 40


def split_run(spec: Path, *resume_overrides: str, first: tuple[str, ...] = ()) -> Path:
    """Run `spec` to iteration HALF (its checkpoint there is the last), then resume it to FULL."""
    nanogpt("run", str(spec), f"train.max_iters={HALF}", *first, check=True)
    run = only_run_dir(spec.parent / "runs", spec.stem)
    nanogpt("run", "--resume", str(run), f"train.max_iters={FULL}", *resume_overrides, check=True)
    return run


def straight_run(spec: Path, *overrides: str) -> Path:
    nanogpt("run", str(spec), f"train.max_iters={FULL}", "logging.run_id=straight", *overrides, check=True)
    return spec.parent / "runs" / spec.stem / "straight"


def checkpoint(run: Path, step: int) -> dict:
    from nanogpt.checkpoints.state import load_checkpoint

    return load_checkpoint(run / "checkpoints" / f"ckpt-{step:08d}.pt")


def test_resume_with_dropout_is_exact(tmp_path: Path):
    """With dropout on, a run resumed half-way draws the same masks: losses and weights bit-identical."""
    spec = tiny_spec(tmp_path, model={"dropout": 0.2})
    split, straight = split_run(spec), straight_run(spec)
    assert losses(split) == losses(straight)
    assert same_weights(final_weights(split), final_weights(straight))
    # dropout was really on: the same run without it trains differently
    undropped = straight_run(tiny_spec(tmp_path, name="nodrop"))
    assert losses(undropped)[1:] != losses(straight)[1:]


def test_resume_with_the_overrides_a_resume_may_change(tmp_path: Path, reference_run: ReferenceRun):
    """A resume may change how long, how often to evaluate and log, how many checkpoints to keep, the device,
    compilation and logging: accepted without --force, recorded, and the weights are the straight run's."""
    spec = tiny_spec(tmp_path)
    allowed = ("train.eval_interval=20", "train.log_interval=5", "train.keep_checkpoints=1", "logging.samples=0",
               'system.device="cpu"', "system.compile=false", "system.peak_tflops=1.5", 'description="resumed"')
    split = split_run(spec, *allowed)
    assert same_weights(final_weights(split), final_weights(reference_run.dir))  # the straight run of this spec
    m = json.loads((split / "manifest.json").read_text())
    assert m["resumes"][-1]["overrides"] == [f"train.max_iters={FULL}", *allowed]
    assert m["spec"]["train"]["max_iters"] == FULL and m["spec"]["train"]["keep_checkpoints"] == 1
    assert [c["step"] for c in m["checkpoints"]] == [FULL]  # keep_checkpoints=1 took effect
    assert 'description = "resumed"' in (split / "spec.toml").read_text()


def test_resume_with_force_continues_with_the_change(tmp_path: Path):
    """--force resumes with a change that alters the training (here the learning rate): the first half is the
    straight run's, the second half continues from the checkpoint (not from scratch) with the new value."""
    spec = tiny_spec(tmp_path, schedule={"kind": "constant", "warmup_iters": 0})
    nanogpt("run", str(spec), f"train.max_iters={HALF}", check=True)
    run = only_run_dir(tmp_path / "runs")
    refused = nanogpt("run", "--resume", str(run), f"train.max_iters={FULL}", "optimizer.lr=1e-3")
    assert refused.returncode == 2 and "spec.optimizer.lr: 0.003 -> 0.001" in refused.stderr
    nanogpt("run", "--resume", str(run), "--force", f"train.max_iters={FULL}", "optimizer.lr=1e-3", check=True)
    straight = straight_run(spec)
    first_half = [r for r in losses(run) if r[0] < HALF]
    assert first_half == [r for r in losses(straight) if r[0] < HALF]
    lrs = [json.loads(x)["lr"] for x in (run / "metrics.jsonl").read_text().splitlines() if '"train"' in x]
    assert lrs == [3e-3] * HALF + [1e-3] * HALF
    m = json.loads((run / "manifest.json").read_text())
    assert m["spec"]["optimizer"]["lr"] == 1e-3 and "--force" in m["resumes"][-1]["command"]
    assert m["metrics"]["iter"] == FULL and checkpoint(run, FULL)["iter"] == FULL
    # and it went on from the checkpoint: a fresh run at the new lr is another run altogether
    fresh = straight_run(tiny_spec(tmp_path, name="fresh", schedule={"kind": "constant", "warmup_iters": 0}), "optimizer.lr=1e-3")
    assert losses(run)[-1] != losses(fresh)[-1]


@pytest.mark.skipif(not hasattr(torch.amp, "GradScaler"), reason="torch without torch.amp.GradScaler")
def test_float16_with_its_gradient_scaler_through_a_resume(tmp_path: Path):
    """float16 on the CPU (autocast + GradScaler, which torch supports there): the scaler's state travels in the
    checkpoint and is restored, so a resumed run ends with the straight run's weights and scaler state."""
    spec = tiny_spec(tmp_path, system={"device": "cpu", "compile": False, "dtype": "float16"}, train={"keep_checkpoints": 10})
    split, straight = split_run(spec), straight_run(spec)
    half = checkpoint(split, HALF)["scaler"]
    assert half is not None and half["_growth_tracker"] == HALF  # the scaler ran, one unskipped step each
    assert checkpoint(split, FULL)["scaler"] == checkpoint(straight, FULL)["scaler"]
    assert checkpoint(split, FULL)["scaler"]["_growth_tracker"] == FULL  # restored, not restarted at 0
    assert losses(split) == losses(straight)
    assert same_weights(final_weights(split), final_weights(straight))
    assert json.loads((split / "manifest.json").read_text())["hardware"]["dtype"] == "float16"


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "nanogpt.run", *args],
                          env=env or env_with_plugins(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-6000:]
    return done


def close(a: list, b: list) -> None:
    """Same iterations and kinds; losses equal to 1e-5 (two processes sum gradients in another order)."""
    assert [r[:2] for r in a] == [r[:2] for r in b]
    for ra, rb in zip(a, b):
        assert rb[2:] == pytest.approx(ra[2:], rel=1e-5), (ra, rb)


def test_resume_on_another_number_of_processes(tmp_path: Path, reference_run: ReferenceRun):
    """Half a run under torchrun with 2 processes, resumed by 1 (and one of 1 resumed by 2): the same global
    batches, so the losses and the weights are the single straight run's, to float precision."""
    straight = reference_run.dir  # the single straight run of this spec

    two_then_one = tiny_spec(tmp_path, name="two_then_one")
    torchrun(str(two_then_one), f"train.max_iters={HALF}")
    run = only_run_dir(tmp_path / "runs", "two_then_one")
    nanogpt("run", "--resume", str(run), f"train.max_iters={FULL}", check=True)

    one_then_two = tiny_spec(tmp_path, name="one_then_two")
    nanogpt("run", str(one_then_two), f"train.max_iters={HALF}", check=True)
    run2 = only_run_dir(tmp_path / "runs", "one_then_two")
    torchrun("--resume", str(run2), f"train.max_iters={FULL}")

    for resumed, sizes in ((run, [2, 1]), (run2, [1, 2])):
        close(losses(straight), losses(resumed))
        ours, theirs = final_weights(resumed), final_weights(straight)
        assert all(torch.allclose(ours[k], theirs[k], rtol=1e-4, atol=1e-6) for k in theirs)
        m = json.loads((resumed / "manifest.json").read_text())
        assert m["status"] == "completed" and m["hardware"]["world_size"] == sizes[1] and len(m["resumes"]) == 1


def test_one_gradient_all_reduce_per_optimizer_step(tmp_path: Path):
    """Under torchrun with 2 micro-batches per process per step, DDP all-reduces the gradients once per optimizer
    step (on the last micro-batch), not once per micro-batch: counted by a communication hook on each rank."""
    log = tmp_path / "allreduce"
    log.mkdir()
    spec = tiny_spec(tmp_path, extra='plugins = ["count_allreduce"]', train={"grad_accum": 4, "max_iters": 12, "eval_interval": 6})
    torchrun(str(spec), env=env_with_plugins(ALLREDUCE_LOG=str(log)))
    for rank in (0, 1):
        record = json.loads((log / f"rank{rank}.json").read_text())
        assert record["steps"] == 12
        per_step = [sum(1 for step, _ in record["calls"] if step == s) for s in range(12)]
        assert per_step == [1] * 12, per_step  # one bucket (a tiny model), all-reduced once each step
