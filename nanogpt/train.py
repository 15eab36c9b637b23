"""The runner: a validated spec in, a complete run directory out.

`run()` reads top to bottom: the process's place in the job, the data, the model, the optimizer
and the schedule (each built from its own table), then the run directory and the loop. The loop
evaluates on fixed batches, logs without syncing the device on other steps, checkpoints at
evaluations, and stops cleanly on SIGINT/SIGTERM (checkpoint, `interrupted`, exit 130) or on a
non-finite loss (`failed`, the last good checkpoint kept).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import torch

from nanogpt import checkpoint as ckpt
from nanogpt.dist import DistEnv
from nanogpt.errors import InputError, NanoGPTError, exhaustion
from nanogpt.fileio import atomic_open, atomic_write_text
from nanogpt.hardware import Peak, keep_freed_memory_in_process, mfu, peak_for
from nanogpt.manifest import (
    MANIFEST, METRICS, RunDir, device_name, env_info, find_resumable, now_iso, read_manifest, resumed_provenance,
    training_changes,
)
from nanogpt.runlock import RunLock
from nanogpt.signals import StopSignals, on_abort
from nanogpt.registry import DATA, MODELS, OPTIMIZERS, SCHEDULES
from nanogpt.spec import Experiment, SpecOrigin, resolved, spec_sha256, to_toml
from nanogpt.tracking import build_tracker, markdown_code, run_hparams

EXIT_INTERRUPTED = 130


class NonFiniteLoss(NanoGPTError):
    pass


class Interrupted(Exception):
    """A signal asked the run to stop: it saves a checkpoint and ends `interrupted`."""


def _lost_peer(e: BaseException) -> bool:
    """Whether an exception is a collective giving up because another process went away."""
    if isinstance(e, torch.distributed.DistError):
        return True
    text = str(e)
    return any(s in text for s in ("Connection closed by peer", "Connection reset", "remote worker", "NCCL"))


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
        model = MODELS.build(exp.model, vocab_size=data.vocab_size).to(env.device)
        optimizer = OPTIMIZERS.build(exp.optimizer, model=model)
        lr_at = SCHEDULES.build(exp.schedule, lr=exp.optimizer.lr)
        stop.defer(announce=env.is_main)  # a run dir exists from here on: signals stop it cleanly
        run_dir = open_run(exp, origin, env, data, model, claim, run_id, record)
    except BaseException:
        if claim is not None:
            claim.release()
        env.close(barrier=False)
        raise
    status = 1

    def record_abort() -> None:  # a second Ctrl-C ends the process at once: the record says so first
        if isinstance(run_dir, RunDir):
            run_dir.finish("interrupted", "stopped by a second Ctrl-C before a checkpoint could be saved")

    try:
        with on_abort(record_abort):
            trainer = Trainer(exp, env, data, model, optimizer, lr_at, run_dir, claim, stop)
            status = trainer.train()
        return status
    except BaseException as e:
        # the run dir exists but the loop never started (a checkpoint that does not fit, a second
        # Ctrl-C): it must not be left `running`
        status = EXIT_INTERRUPTED if isinstance(e, KeyboardInterrupt) else getattr(e, "exit_code", 1)
        if isinstance(run_dir, RunDir):
            with contextlib.suppress(Exception):
                if isinstance(e, KeyboardInterrupt):
                    run_dir.finish("interrupted", "stopped before training started")
                else:
                    run_dir.finish("failed", f"{type(e).__name__}: {e}", failure="error")
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
    ckpt.remove_torn_files(run_dir)
    manifest = read_manifest(run_dir / MANIFEST)
    spec = resolved(exp)

    def usable(state: dict[str, Any]) -> str | None:
        saved = state.get("spec")
        if not isinstance(saved, dict):
            return "records no spec"
        changes = training_changes(saved, spec)
        if changes and not force:
            shown = ", ".join(f"{path} {a!r} -> {b!r}" for path, a, b in changes[:3])
            return f"was saved by a different spec ({shown}{', ...' if len(changes) > 3 else ''})"
        return None

    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    claim.checkpoints, state = ckpt.resume_checkpoint(run_dir, manifest, usable, force=force, say=say)
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


def open_run(exp: Experiment, origin: SpecOrigin, env: DistEnv, data: Any, model: Any, claim: Claim,
             run_id: str | None = None, record: dict[str, Any] | None = None) -> RunDir | Path:
    """Rank 0 creates (or reopens) the run directory; the others learn its path."""
    run: RunDir | None = None
    if env.is_main:
        if claim.resume_dir is None:
            run = RunDir.create(exp, origin, {**record_sections(exp, env, data, model), **(record or {})}, run_id)
            claim.lock = run.lock
        else:
            run = RunDir.open(claim.resume_dir, claim.lock)
            run.manifest.update(record_sections(exp, env, data, model))
            run.manifest["spec"] = resolved(exp)
            run.manifest["spec_sha256"] = spec_sha256(exp)
            run.manifest["provenance"] = resumed_provenance(run.manifest.get("provenance"), exp, origin)
            run.manifest.setdefault("resumes", []).append(
                {"at": now_iso(), "overrides": list(origin.overrides), "command": " ".join(sys.argv),
                 "from_checkpoint": str(claim.checkpoint.relative_to(claim.resume_dir)) if claim.checkpoint else None}
            )
            run.manifest["checkpoints"] = claim.checkpoints
            run.manifest["status"] = "running"
            run.manifest["finished_at"] = None
            run.manifest["error"] = None
            run.manifest["failure"] = None
            if claim.checkpoint is None:
                run.manifest["metrics"] = {}
            atomic_write_text(run.path / "spec.toml", to_toml(exp))
            run.save()
    path = env.broadcast_object(str(run.path) if run else None)
    return run if run is not None else Path(path)


def record_sections(exp: Experiment, env: DistEnv, data: Any, model: Any) -> dict[str, Any]:
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
        "data": data.dataset.record(),
        "model": {
            "params": model.num_params(),
            "flops_per_token": model.flops_per_token(),
            "vocab_size": data.vocab_size,
        },
    }


# ------------------------------------------------------------------------------- the step


class TrainStep:
    """One optimizer step, and the loss estimate, exactly as the runner and `bench` both run them."""

    def __init__(self, exp: Experiment, env: DistEnv, data: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr_at: Any):
        self.env, self.data, self.optimizer, self.lr_at = env, data, optimizer, lr_at
        self.seed = exp.seed
        self.grad_accum = exp.train.grad_accum
        self.grad_clip = float(getattr(exp.optimizer, "grad_clip", 0.0))
        self.raw_model = model
        self.autocast = (
            torch.autocast(device_type=env.device_type, dtype=env.dtype)
            if env.dtype != torch.float32
            else contextlib.nullcontext()
        )
        self.scaler = torch.amp.GradScaler(env.device_type, enabled=env.dtype == torch.float16)
        if exp.system.activation_checkpointing == "blocks":
            if not hasattr(model, "checkpoint_blocks"):
                raise InputError(
                    f"system.activation_checkpointing = 'blocks': model.kind {exp.model.kind!r} has no blocks to "
                    "recompute (its model has no `checkpoint_blocks` switch); use 'none'"
                )
            model.checkpoint_blocks = True
        self.model = model
        if exp.system.compile:
            self.model = torch.compile(self.model)
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            # buffers that are not part of the state (GPT's vocab_mask) are constants: broadcasting
            # them from rank 0 before every forward would be a collective per micro-batch for nothing
            persistent = set(model.state_dict())
            stateful_buffers = any(name in persistent for name, _ in model.named_buffers())
            self.model = DDP(
                self.model, device_ids=[env.device.index] if env.device_type == "cuda" else None,
                broadcast_buffers=stateful_buffers,
            )
        self.micro = data.micro_steps(self.grad_accum)

    def __call__(self, it: int, want_norm: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, float]:
        """Iteration `it` over this rank's share of its global batch: (summed loss, grad norm, lr)."""
        lr = self.lr_at(it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        # dropout's randomness, like the batches, is a function of (seed, iteration, rank): a
        # resumed run draws the same masks without any RNG state to restore
        self._seed_rng(hash((self.seed, it, self.env.rank)) & 0x7FFF_FFFF_FFFF_FFFF)
        # each rank's share is averaged over its micro-batches; DDP's average over ranks then
        # makes the gradient the mean over all grad_accum micro-batches of the job
        scale = 1.0 / len(self.micro)
        loss_sum = torch.zeros((), device=self.env.device)
        for i, (x, y) in enumerate(self.data.train_batches(it, self.grad_accum)):
            last = i == len(self.micro) - 1
            # gradients are all-reduced once per step, on the last micro-batch, not on each
            sync = contextlib.nullcontext() if last or not self.env.distributed else self.model.no_sync()
            with sync:
                with self.autocast:
                    _, loss = self.model(x, y)
                loss_sum += loss.detach()
                self.scaler.scale(loss * scale).backward()
        grad_norm = None
        if self.grad_clip > 0 or want_norm:
            self.scaler.unscale_(self.optimizer)
            clip = self.grad_clip if self.grad_clip > 0 else math.inf
            grad_norm = torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum, grad_norm, lr

    def _seed_rng(self, seed: int) -> None:
        # only the generators a step draws from: torch.manual_seed also queues lazy seeds for every
        # backend this process does not use, formatting the Python stack for each (0.15 ms a step,
        # 0.5% of the quickstart's step on a 2-core CPU)
        torch.default_generator.manual_seed(seed)
        if self.env.device_type == "cuda":
            torch.cuda.manual_seed(seed)  # this process's device (DistEnv made it the current one)
        elif self.env.device_type == "mps":
            torch.mps.manual_seed(seed)

    EVAL_STOP_CHECK = 4
    """Evaluation batches between two looks at the stop flag (all ranks look at the same batches)."""

    @torch.no_grad()
    def estimate_loss(self, eval_iters: int, should_stop: Callable[[int, int], bool] | None = None) -> dict[str, float] | None:
        """Mean loss over the fixed evaluation batches of each split (the same on any number of ranks).

        None when `should_stop(round, every)` says a signal arrived: a long evaluation must not
        hold up a scheduler's SIGTERM.
        """
        self.model.eval()
        out = {}
        world, rank = self.env.world_size, self.env.rank
        try:
            for split in ("train", "val"):
                total = torch.zeros((), device=self.env.device)
                keys = self.data.eval_keys(split, eval_iters)
                # rounds of one batch per rank; a rank past its share still takes part in the checks
                for r in range(-(-eval_iters // world)):
                    if should_stop is not None and should_stop(r, self.EVAL_STOP_CHECK):
                        return None
                    if r < len(keys):
                        x, y = self.data.to_device(self.data.batch(split, keys[r]))
                        with self.autocast:
                            _, loss = self.model(x, y)
                        total += loss.float()
                out[split] = (self.env.sum(total) / eval_iters).item()
        finally:
            self.model.train()
        return out


# ------------------------------------------------------------------------------- the loop


class Trainer:
    """The loop around `TrainStep`: evaluation, logging, checkpoints, the manifest, signals."""

    def __init__(self, exp: Experiment, env: DistEnv, data: Any, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 lr_at: Any, run: RunDir | Path, claim: Claim, stop: StopSignals):
        self.exp, self.env, self.data, self.optimizer = exp, env, data, optimizer
        self.raw_model = model
        self.run = run if isinstance(run, RunDir) else None  # only rank 0 holds the record
        self.run_path = run.path if isinstance(run, RunDir) else run
        self.train_cfg = exp.train
        self.tokens_per_iter = exp.tokens_per_iter
        self.peak: Peak = peak_for(env.device, env.dtype, exp.system.peak_tflops)
        self.flops_per_token = model.flops_per_token()
        self.iter = 0
        self.best_val_loss = math.inf
        self.metrics: dict[str, Any] = {}
        self.wall_before = 0.0  # wall seconds of earlier sessions of this run
        self.windows_this_session = 0  # logged training windows since this process started
        self.stop = stop
        self.session_start = time.perf_counter()
        self.checkpoints = ckpt.CheckpointWriter(self.run_path)
        scaler_state = self._resume_from_checkpoint(claim)  # before wrapping: DDP starts from these weights
        self.step = TrainStep(exp, env, data, model, optimizer, lr_at)
        if scaler_state:
            self.step.scaler.load_state_dict(scaler_state)
        # a resumed run hides what it logged after its checkpoint (or everything, when it starts over)
        purge_step = self.iter if claim.resume_dir is not None else None
        self.tracker = build_tracker(self.run_path, enabled=exp.logging.tensorboard, is_main=env.is_main, purge_step=purge_step)

    # ------------------------------------------------------------------ resume

    def _resume_from_checkpoint(self, claim: Claim) -> dict[str, Any] | None:
        """Load the checkpoint rank 0 verified, if any; returns the gradient scaler's state."""
        if claim.checkpoint is None:
            self._truncate_metrics(0)
            return None
        state = claim.state if claim.state is not None else ckpt.load_checkpoint(claim.checkpoint, map_location=self.env.device)
        claim.state = None  # the loaded tensors are copied into the model; let them go
        problem = ckpt.state_mismatch(self.raw_model.state_dict(), state.get("model"))
        if problem is not None:
            raise ckpt.CheckpointError(f"checkpoint {str(claim.checkpoint)!r} does not fit this run's model: {problem}")
        self.raw_model.load_state_dict(state["model"])
        try:
            self.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise ckpt.CheckpointError(
                f"checkpoint {str(claim.checkpoint)!r} holds optimizer state that does not fit this run's optimizer ({e})"
            ) from None
        self.iter = int(state["iter"])
        self.best_val_loss = float(state["best_val_loss"])
        self.wall_before = float(state.get("wall_seconds", 0.0))
        self.metrics = dict(state.get("metrics") or {})
        self._truncate_metrics(self.iter)
        self._say(f"resuming {self.run_path} from {claim.checkpoint.name} (iteration {self.iter})")
        return state.get("scaler")

    def _truncate_metrics(self, before_iter: int) -> None:
        """Drop metric lines logged after the checkpoint: the resumed run logs them again."""
        if not self.env.is_main:
            return
        path = self.run_path / METRICS
        if not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                if json.loads(line)["iter"] < before_iter:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue  # a line cut short by a kill
        with atomic_open(path, "w") as f:
            f.writelines(kept)

    # -------------------------------------------------------------------- loop

    def train(self) -> int:
        cfg = self.train_cfg
        self._announce()
        self._log_spec()
        self.session_start = time.perf_counter()
        try:
            # the first iteration whose loss was not finite, tracked on the device (no sync per step)
            first_bad = torch.full((), -1, dtype=torch.long, device=self.env.device)
            t_log, iters_since_log = time.perf_counter(), 0
            while True:
                it = self.iter
                if cfg.eval_only or it % cfg.eval_interval == 0 or it == cfg.max_iters:
                    self._evaluate_and_checkpoint(it)
                    t_log = time.perf_counter()  # evaluation time is not training throughput
                    iters_since_log = 0
                if cfg.eval_only or it >= cfg.max_iters:
                    break
                if self._stop_requested(it, cfg.log_interval):
                    raise Interrupted
                log_now = it % cfg.log_interval == 0 or it == cfg.max_iters - 1
                loss_sum, grad_norm, lr = self.step(it, want_norm=log_now)
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss_sum), it, first_bad)
                self.iter = it + 1
                iters_since_log += 1
                if log_now:
                    self._log_train(it, loss_sum, grad_norm, lr, first_bad, t_log, iters_since_log)
                    t_log, iters_since_log = time.perf_counter(), 0
            self._finish("completed")
            return 0
        except Interrupted:
            self._save_checkpoint(self.iter, val_loss=None)
            self._finish("interrupted")
            self._say(
                f"interrupted at iteration {self.iter}; checkpoint saved. Resume with: "
                f"nanogpt run --resume {self.run_path}"
            )
            return EXIT_INTERRUPTED
        except NonFiniteLoss as e:
            self._finish("failed", str(e), failure="nonfinite")
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            # a second Ctrl-C during the checkpoint: give up saving, but record it
            self._finish("interrupted", "stopped before a checkpoint could be saved", wait_for_checkpoint=False)
            return EXIT_INTERRUPTED
        except BaseException as e:
            message = f"rank {self.env.rank}: {type(e).__name__}: {e}" if self.env.distributed else f"{type(e).__name__}: {e}"
            self._record_failure(message.strip(), lost_peer=self.env.distributed and _lost_peer(e))
            if isinstance(e, NanoGPTError):
                print(f"error: {e}", file=sys.stderr)
                return e.exit_code
            if exhaustion(e) is not None:  # a full disk or memory: recorded above, no traceback needed
                print(f"error: {exhaustion(e)}; the run is marked failed, its last good checkpoint kept", file=sys.stderr)
                return 1
            traceback.print_exc()
            return 1
        finally:
            self.tracker.close()

    def _stop_requested(self, it: int, every: int) -> bool:
        """Whether a signal asks the job to stop, agreed by every rank at the same iteration.

        Alone, a process looks at its flag each time (free). In a job the ranks agree through a
        small collective, so they only ask every `every` iterations (at the logging steps, which
        sync anyway): the cost is one gloo all-reduce per `every` steps, the delay at most `every` steps.
        """
        if not self.env.distributed:
            return self.stop.received is not None
        if it % every:
            return False
        return self.env.any_rank(self.stop.received is not None)

    def _evaluate_and_checkpoint(self, it: int) -> None:
        losses = self.step.estimate_loss(self.train_cfg.eval_iters, should_stop=self._stop_requested)
        if losses is None:
            raise Interrupted
        train_loss, val_loss = losses["train"], losses["val"]
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise NonFiniteLoss(
                f"the evaluation loss is not finite at iteration {it} (train {train_loss}, val {val_loss}); "
                f"the run stopped, {self._kept_checkpoint_text()}"
            )
        improved = val_loss < self.best_val_loss
        self.best_val_loss = min(self.best_val_loss, val_loss)
        self.metrics.update(
            train_loss=train_loss,
            val_loss=val_loss,
            best_val_loss=self.best_val_loss,
            train_perplexity=math.exp(min(train_loss, 700)),
            val_perplexity=math.exp(min(val_loss, 700)),
        )
        self._say(f"step {it}: train loss {train_loss:.4f}, val loss {val_loss:.4f}")
        self.tracker.scalars(
            it,
            {
                "loss/train": train_loss,
                "loss/val": val_loss,
                "perplexity/train": self.metrics["train_perplexity"],
                "perplexity/val": self.metrics["val_perplexity"],
            },
        )
        self._append_metrics({"iter": it, "kind": "eval", "train_loss": train_loss, "val_loss": val_loss})
        self._log_samples(it)
        if it > 0 and not self.train_cfg.eval_only:
            self._save_checkpoint(it, val_loss=val_loss, best=improved)
        self._update_manifest(it)

    def _log_samples(self, it: int) -> None:
        n = self.exp.logging.samples
        tokenizer = getattr(self.data.dataset, "tokenizer", None)
        if not self.env.is_main or n == 0 or tokenizer is None or not self.exp.logging.tensorboard:
            return
        if self.env.distributed and it < self.train_cfg.max_iters and not self.train_cfg.eval_only:
            return  # every other GPU would wait for rank 0's generation: in a job, only at the end
        from nanogpt.sample import generate_texts

        texts = generate_texts(
            self.raw_model, tokenizer, start=None, num_samples=n, max_new_tokens=self.exp.logging.sample_tokens,
            seed=self.exp.seed + it, device=self.env.device, autocast=self.step.autocast,
        )
        self.last_samples = texts
        self.tracker.text("samples", "\n\n---\n\n".join(markdown_code(t) for t in texts), step=it)

    # -------------------------------------------------------------- logging

    def _log_train(self, it: int, loss_sum: torch.Tensor, grad_norm: torch.Tensor | None, lr: float, first_bad: torch.Tensor, t_log: float, iters: int) -> None:
        # the one host sync of a logging step: the loss of the global batch, summed over ranks
        loss_sum = self.env.sum(loss_sum.float().clone())
        loss = loss_sum.item() / self.train_cfg.grad_accum
        # a NaN on one rank reaches every rank through the gradient all-reduce, so each rank
        # stops at the same logging step
        bad_at = int(first_bad.item())
        if bad_at >= 0 or not math.isfinite(loss):
            bad_at = bad_at if bad_at >= 0 else it
            raise NonFiniteLoss(
                f"the training loss is not finite at iteration {bad_at}; the run stopped, "
                f"{self._kept_checkpoint_text()} (try a lower optimizer.lr or optimizer.grad_clip)"
            )
        dt = time.perf_counter() - t_log
        tokens_per_sec = self.tokens_per_iter * iters / dt if dt > 0 else 0.0
        util = mfu(self.flops_per_token, tokens_per_sec, self.peak, self.env.world_size)
        norm = grad_norm.item() if grad_norm is not None else None
        self._add_to_average(self.tokens_per_iter * iters, dt, tokens_per_sec)
        self.metrics.update(last_train_step_loss=loss)
        self.tracker.scalars(
            it,
            {"loss/train_step": loss, "lr": lr, "grad_norm": norm, "tokens_per_sec": tokens_per_sec, "mfu": util},
        )
        self._append_metrics(
            {"iter": it, "kind": "train", "loss": loss, "lr": lr, "grad_norm": norm,
             "tokens_per_sec": tokens_per_sec, "mfu": util, "ms_per_iter": dt / iters * 1000}
        )
        mfu_text = f", mfu {util * 100:.1f}%" if util is not None else ""
        self._say(f"iter {it}: loss {loss:.4f}, lr {lr:.2e}, {dt / iters * 1000:.1f} ms/iter, {tokens_per_sec:,.0f} tok/s{mfu_text}")

    def _add_to_average(self, tokens: int, seconds: float, window_tokens_per_sec: float) -> None:
        """The manifest's tokens/s and MFU are the run's average over its logged windows, each
        session's first left out (it holds the warm-up, and torch.compile's start); TensorBoard and
        metrics.jsonl have each window's own. The sums live in `metrics`, which checkpoints carry."""
        self.windows_this_session += 1
        if self.windows_this_session > 1:
            self.metrics["timed_tokens"] = self.metrics.get("timed_tokens", 0) + tokens
            self.metrics["timed_seconds"] = self.metrics.get("timed_seconds", 0.0) + seconds
        timed = self.metrics.get("timed_seconds", 0.0)
        average = self.metrics["timed_tokens"] / timed if timed > 0 else window_tokens_per_sec  # a first window only
        self.metrics.update(
            tokens_per_sec=average, mfu=mfu(self.flops_per_token, average, self.peak, self.env.world_size)
        )

    def _kept_checkpoint_text(self) -> str:
        with contextlib.suppress(Exception):
            self.checkpoints.wait()
        entries = self.run.manifest.get("checkpoints") if self.run is not None else None
        if not entries:
            return "and it had saved no checkpoint yet"
        last = max(entries, key=lambda e: e["step"])
        return f"and its last good checkpoint ({last['path']}, iteration {last['step']}) is kept"

    def _append_metrics(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            # the run's wall clock (over all its sessions): what `nanogpt plot --x wall` draws against
            record["wall_seconds"] = round(self.wall_before + time.perf_counter() - self.session_start, 3)
            with open(self.run_path / METRICS, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _say(self, text: str) -> None:
        if self.env.is_main:
            print(text, flush=True)

    def _log_spec(self) -> None:
        """The resolved spec, and where each value came from, as TensorBoard text (once per run)."""
        if self.run is None or self.iter > 0:
            return
        self.tracker.text("spec", markdown_code(to_toml(self.exp)))
        provenance = self.run.manifest.get("provenance") or {}
        changed = [f"{path}: {source}" for path, source in provenance.items() if source != "default"]
        self.tracker.text("spec/provenance", markdown_code("\n".join(changed) or "(every value is a default)"))
        extends = self.run.manifest.get("extends") or {}
        if extends.get("files"):
            lines = [f"extends {', '.join(extends['files'])}; this spec changes:"]
            for c in extends["changes"]:
                before = "(default)" if c["extended"] is None else json.dumps(c["extended"])
                lines.append(f"  {c['path']}: {before} -> {json.dumps(c['value'])}   ({c['source']})")
            self.tracker.text("spec/vs_extended", markdown_code("\n".join(lines)))

    def _announce(self) -> None:
        exp, env = self.exp, self.env
        rec = self.run.manifest if self.run else {}
        data = rec.get("data", {})
        model = rec.get("model", {})
        self._say(f"run: {exp.name} -> {self.run_path}")
        if data:
            self._say(
                f"data: {exp.data.dataset if hasattr(exp.data, 'dataset') else exp.data.kind}: "
                f"{data['train']['tokens']:,} train / {data['val']['tokens']:,} val tokens "
                f"({data.get('tokenizer')}, vocab {data.get('vocab_size')})"
            )
        if model:
            self._say(f"model: {model['params'] / 1e6:.2f}M parameters, {model['flops_per_token'] / 1e6:.1f} MFLOPs/token")
        self._say(
            f"device: {env.device} ({str(env.dtype).removeprefix('torch.')}), {env.world_size} process(es), "
            f"{self.tokens_per_iter:,} tokens/iter, compile {'on' if exp.system.compile else 'off'}"
        )

    # ---------------------------------------------------------- checkpoints

    def _save_checkpoint(self, it: int, val_loss: float | None, best: bool = False) -> None:
        if not self.env.is_main or self.run is None:
            return
        from nanogpt.sample import tokenizer_record

        state = {
            "format": ckpt.FORMAT,
            "model": self.raw_model.state_dict(),
            "model_arch": self.raw_model.arch(),
            # the dataset's tokenizer, so a checkpoint alone is enough to sample from
            "tokenizer": tokenizer_record(getattr(getattr(self.data, "dataset", None), "meta", None)),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.step.scaler.state_dict() if self.step.scaler.is_enabled() else None,
            "iter": it,
            "best_val_loss": self.best_val_loss,
            "val_loss": val_loss,
            "spec_sha256": self.run.manifest["spec_sha256"],
            "spec": self.run.manifest["spec"],
            "metrics": dict(self.metrics),
            "wall_seconds": self.wall_before + time.perf_counter() - self.session_start,
        }
        run, keep = self.run, self.train_cfg.keep_checkpoints

        def record(path: Path, digest: str) -> None:
            run.record_checkpoint({"path": str(path.relative_to(run.path)), "step": it, "sha256": digest, "val_loss": val_loss}, keep)

        self.checkpoints.save(it, state, on_written=record)

    # --------------------------------------------------------------- endings

    def _update_manifest(self, it: int) -> None:
        if self.run is None:
            return
        wall = self.wall_before + time.perf_counter() - self.session_start
        self.run.manifest["metrics"] = {
            "iter": it,
            "tokens_seen": it * self.tokens_per_iter,
            "train_loss": self.metrics.get("train_loss"),
            "val_loss": self.metrics.get("val_loss"),
            "best_val_loss": self.metrics.get("best_val_loss"),
            "train_perplexity": self.metrics.get("train_perplexity"),
            "val_perplexity": self.metrics.get("val_perplexity"),
            "tokens_per_sec": self.metrics.get("tokens_per_sec"),
            "mfu": self.metrics.get("mfu"),
            "wall_seconds": wall,
        }
        self.run.save()

    def _finish(self, status: str, error: str | None = None, failure: str | None = None, *, wait_for_checkpoint: bool = True) -> None:
        if wait_for_checkpoint:
            self.checkpoints.wait()  # a run is done only once its last checkpoint is on disk and listed
        self._update_manifest(self.iter)
        if self.run is None:
            return
        self.tracker.hparams(
            run_hparams(self.run.manifest),
            {"loss/val": self.metrics.get("val_loss"), "loss/train": self.metrics.get("train_loss")},
        )
        self.run.finish(status, error, failure)
        if status == "completed":
            self._say(
                f"done: {self.iter} iterations, best val loss {self.best_val_loss:.4f}\n"
                f"run dir: {self.run_path}\n"
                f"watch:   tensorboard --logdir {self.exp.logging.out_dir}"
            )
            samples = getattr(self, "last_samples", None)
            if samples:
                self._say("sample:\n" + samples[0])

    def _record_failure(self, message: str, lost_peer: bool) -> None:
        with contextlib.suppress(BaseException):
            self.checkpoints.wait()  # a checkpoint already being written is a good one: keep it listed
        if self.run is not None:
            if lost_peer:
                # rank 0 failed only because another rank did (its collective lost a peer): give
                # that rank a moment to record its own error, and report that one first
                root_cause = self._peer_failure(wait_seconds=5.0)
                if root_cause:
                    message = f"{root_cause} (then {message})"
            with contextlib.suppress(Exception):
                self._update_manifest(self.iter)
            with contextlib.suppress(Exception):
                self.run.finish("failed", message, failure="lost_peer" if lost_peer else "error")
        elif self.env.distributed:
            # a rank other than 0 records its own failure: rank 0 may be stuck waiting for it
            with contextlib.suppress(Exception):
                RunDir.open(self.run_path).finish("failed", message, failure="lost_peer" if lost_peer else "error")

    def _peer_failure(self, wait_seconds: float) -> str | None:
        deadline = time.time() + wait_seconds
        while True:
            with contextlib.suppress(InputError):
                on_disk = read_manifest(self.run_path / "manifest.json")
                error = on_disk.get("error") or ""
                if on_disk.get("status") == "failed" and error.startswith("rank ") and not error.startswith("rank 0:"):
                    return error
            if time.time() > deadline:
                return None
            time.sleep(0.1)
