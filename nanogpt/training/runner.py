"""The runner: a validated spec in, a complete run directory out.

`run()` reads top to bottom: the process's place in the job, the run to continue (if any), the
data, the model, the optimizer and the schedule (each built from its own table by the registry,
and seen from here on only through nanogpt.contracts), then the run's record and the loop
(nanogpt.training.loop). `python -m nanogpt.run` and `nanogpt run` both end up here.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import attrs
import torch

from nanogpt.checkpoints.catalog import remove_torn_files, resume_checkpoint
from nanogpt.contracts import Batches, LanguageModel
from nanogpt.training.dist import DistEnv
from nanogpt.errors import InputError
from nanogpt.training.hardware import keep_freed_memory_in_process, peak_for
from nanogpt.runs.manifest import MANIFEST, RunRecord, find_resumable, read_manifest, shown_value, training_changes
from nanogpt.runs.environment import device_name, env_info
from nanogpt.training.parallel import build_model
from nanogpt.registry import DATA, OPTIMIZERS, SCHEDULES
from nanogpt.runs.runlock import RunLock
from nanogpt.signals import EXIT_INTERRUPTED, StopSignals, on_abort
from nanogpt.config.tables import Experiment
from nanogpt.config.load import SpecOrigin
from nanogpt.config.canonical import resolved
from nanogpt.training.loop import Trainer


# -------------------------------------------------------------------------------- the run


def run(exp: Experiment, origin: SpecOrigin, resume_dir: Path | None = None, *, force: bool = False,
        stop: StopSignals | None = None, run_id: str | None = None, record: dict[str, Any] | None = None) -> int:
    """Train (or evaluate) what the spec says; returns the process exit status.

    `resume_dir` continues that run; `force` lets a resume start over when no checkpoint is
    usable. `stop` is the command's signal handler (one is installed when none is given).
    `run_id` names a new run's directory (a sweep names its members' runs, so it knows where they
    are: such a run never auto-resumes another), and `record` adds keys to its manifest (`sweep`).
    """
    stop = stop or StopSignals().install()
    env = DistEnv.from_env(exp.system)
    configure_backends(exp, env)
    torch.manual_seed(exp.seed)  # the same initial weights on every rank
    claim: Claim | None = None
    try:
        check_world_size(exp, env)
        auto_resume = exp.train.auto_resume and run_id is None
        claim = claim_run(exp, env, resume_dir, force, auto_resume)  # before the data: a second writer waits for nothing
        data = DATA.build(exp.data, env=env, seed=exp.seed, batch_size=exp.train.batch_size, block_size=exp.model.block_size)
        model = build_model(exp, env, data.vocab_size)  # under fsdp sharded, so the optimizer's state is too
        optimizer = OPTIMIZERS.build(exp.optimizer, model=model)
        lr_at = SCHEDULES.build(exp.schedule, lr=exp.optimizer.lr)
        stop.defer(announce=env.is_main)  # a run dir exists from here on: signals stop it cleanly
        run_record = open_run(exp, origin, env, data, model, claim, run_id, record)
    except BaseException:
        if claim is not None:
            claim.release()
        env.close(barrier=False)
        raise
    status = 1

    def record_abort() -> None:  # a second Ctrl-C ends the process at once: the record says so first
        run_record.finish("interrupted", "stopped by a second Ctrl-C before a checkpoint could be saved")

    try:
        with on_abort(record_abort):
            trainer = Trainer(exp, env, data, model, optimizer, lr_at, run_record, stop,
                              resumed=claim.resume_dir is not None, checkpoint=claim.checkpoint, state=claim.take_state())
            status = trainer.train()
        return status
    except BaseException as e:
        # the run dir exists but the loop never started (a checkpoint that does not fit, a second
        # Ctrl-C): it must not be left `running`
        status = EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else getattr(e, "exit_code", 1)
        with contextlib.suppress(Exception):
            if isinstance(e, KeyboardInterrupt):
                run_record.finish("interrupted", "stopped before training started")
            else:
                run_record.finish("failed", f"{type(e).__name__}: {e}", failure="error")
        raise
    finally:
        claim.release()
        # a rank that failed must not wait for the others: they may be waiting for it
        env.close(barrier=status == 0)


def configure_backends(exp: Experiment, env: DistEnv) -> None:
    if env.device_type == "cpu":
        keep_freed_memory_in_process()
    if env.device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = exp.system.tf32
        torch.backends.cudnn.allow_tf32 = exp.system.tf32
    if exp.system.deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it is read when CUDA starts its handles
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def check_world_size(exp: Experiment, env: DistEnv) -> None:
    if exp.train.grad_accum % env.world_size:
        raise InputError(
            f"train.grad_accum ({exp.train.grad_accum}) must be divisible by the number of processes "
            f"({env.world_size}): it counts micro-batches over all of them, so that the global batch "
            "is the same on any number of processes"
        )
    if exp.system.parallel == "fsdp" and exp.train.eval_iters < env.world_size:
        raise InputError(
            f"train.eval_iters ({exp.train.eval_iters}) must be at least the number of processes ({env.world_size}) "
            "under system.parallel = 'fsdp': every process evaluates at least one batch, since each forward "
            "needs all of them"
        )


# ----------------------------------------------------------------------------- the run dir


@attrs.define
class Claim:
    """What rank 0 decided before the run started: which run dir, its lock, and the checkpoint to resume."""

    resume_dir: Path | None = None
    """The run being continued; None for a new run."""
    lock: RunLock | None = None
    """Rank 0's lock on `resume_dir` (a new run's lock is taken when its dir is made)."""
    checkpoint: Path | None = None
    """The verified checkpoint to resume from; None to start at iteration 0."""
    state: dict[str, Any] | None = None
    """Its contents, already loaded on rank 0 (the other ranks load `checkpoint` themselves)."""
    checkpoints: list[dict[str, Any]] = attrs.Factory(list)
    """The manifest's checkpoint list, rebuilt from the files that exist and verify."""

    def release(self) -> None:
        if self.lock is not None:
            self.lock.release()

    def take_state(self) -> dict[str, Any] | None:
        """The loaded checkpoint, handed over once: its tensors are let go when the model has them."""
        state, self.state = self.state, None
        return state


def claim_run(exp: Experiment, env: DistEnv, resume_dir: Path | None, force: bool, auto_resume: bool) -> Claim:
    """Rank 0 locks the run dir to continue (an explicit one, or with `train.auto_resume` the newest
    unfinished run of this spec) and picks its newest verified checkpoint; every rank learns both."""
    claim = Claim()
    problem = None
    if env.is_main:
        try:
            if resume_dir is not None:
                claim.resume_dir, claim.lock = resume_dir, RunLock.acquire(resume_dir)
            elif auto_resume and (found := find_resumable(exp)) is not None:
                claim.resume_dir, claim.lock = found
                print(f"auto_resume: continuing {claim.resume_dir} (status {read_manifest(claim.resume_dir / MANIFEST).get('status')})", flush=True)
            if claim.resume_dir is not None:
                _pick_checkpoint(exp, claim, force)
        except BaseException as e:
            claim.release()
            if not env.distributed:
                raise
            problem = e  # every rank must hear of it, or they would wait for rank 0 forever
    shared = env.broadcast_object(
        None if problem is not None
        else (str(claim.resume_dir) if claim.resume_dir else None, str(claim.checkpoint) if claim.checkpoint else None)
    )
    if problem is not None:
        raise problem
    if shared is None:
        raise InputError("rank 0 could not open the run directory (its error is above)")
    if not env.is_main:
        claim.resume_dir = Path(shared[0]) if shared[0] else None
        claim.checkpoint = Path(shared[1]) if shared[1] else None
    return claim


def _pick_checkpoint(exp: Experiment, claim: Claim, force: bool) -> None:
    run_dir = claim.resume_dir
    assert run_dir is not None
    remove_torn_files(run_dir)
    manifest = read_manifest(run_dir / MANIFEST)
    spec = resolved(exp)

    def usable(state: dict[str, Any]) -> str | None:
        saved = state.get("spec")
        if not isinstance(saved, dict):
            return "records no spec"
        changes = training_changes(saved, spec)
        if changes and not force:
            shown = ", ".join(f"{path} {shown_value(a)} -> {shown_value(b)}" for path, a, b in changes[:3])
            return f"was saved by a different spec ({shown}{', ...' if len(changes) > 3 else ''})"
        return None

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    claim.checkpoints, state = resume_checkpoint(run_dir, manifest, usable, force=force, say=say)
    if state is None:
        return
    claim.checkpoint, claim.state = run_dir / state["entry"]["path"], state
    reached = int(state["iter"])
    if reached > exp.train.max_iters and not exp.train.eval_only:
        raise InputError(
            f"run {str(run_dir)!r} is at iteration {reached} ({claim.checkpoint.name}), past "
            f"train.max_iters = {exp.train.max_iters}: there is nothing left to train. Resume with "
            f"train.max_iters={reached} or more"
        )


def open_run(exp: Experiment, origin: SpecOrigin, env: DistEnv, data: Batches, model: LanguageModel, claim: Claim,
             run_id: str | None = None, extra: dict[str, Any] | None = None) -> RunRecord:
    """Rank 0 creates (or reopens) the run directory and its record; the others learn its path.

    A new run's directory is named `run_id` when given, and its manifest gets the `extra` keys."""
    record: RunRecord | None = None
    if env.is_main:
        sections = record_sections(exp, env, data, model)
        if claim.resume_dir is None:
            record = RunRecord.start(exp, origin, {**sections, **(extra or {})}, run_id)
            claim.lock = record.lock
        else:
            record = RunRecord.resume(exp, origin, sections, claim.resume_dir, claim.lock, claim.checkpoint, claim.checkpoints)
    path = env.broadcast_object(str(record.path) if record else None)
    return record if record is not None else RunRecord(Path(path))


def record_sections(exp: Experiment, env: DistEnv, data: Batches, model: LanguageModel) -> dict[str, Any]:
    """The manifest's sections the components and the machine fill: env, hardware, launcher, data, model."""
    peak = peak_for(env.device, env.dtype, exp.system.peak_tflops)
    return {
        "env": env_info(),
        "hardware": {
            "device": str(env.device),
            "device_name": device_name(env.device),
            "device_count": torch.cuda.device_count() if env.device_type == "cuda" else 1,
            "world_size": env.world_size,
            "dtype": str(env.dtype).removeprefix("torch."),
            "peak_tflops": peak.tflops,
            "peak_tflops_source": peak.source,
            "peak_measurement": peak.measurement,
            "deterministic": {
                "use_deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                "cudnn_deterministic": torch.backends.cudnn.deterministic,
            },
        },
        "launcher": {
            "torchelastic_run_id": os.environ.get("TORCHELASTIC_RUN_ID"),
            "restart_count": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
        },
        "data": data.record(),
        "model": {
            "params": model.num_params(),
            "flops_per_token": model.flops_per_token(),
            "vocab_size": data.vocab_size,
        },
    }
