"""The training loop: `Trainer` evaluates on fixed batches, logs without syncing the device on other
steps, checkpoints at evaluations, and stops cleanly on SIGINT/SIGTERM (checkpoint, `interrupted`,
exit 130) or on a non-finite loss (`failed`, the last good checkpoint kept).

It sees the model and the data only through nanogpt.contracts; one step is nanogpt.training.step's,
what it reports goes to nanogpt.training.tracking, what it records to the run's `RunRecord`, and
its checkpoints' contents are nanogpt.checkpoints.state's."""

from __future__ import annotations

import contextlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from nanogpt.checkpoints.files import CheckpointWriter
from nanogpt.checkpoints.state import restore_training_state, training_state
from nanogpt.contracts import Batches, LanguageModel
from nanogpt.training.dist import DistEnv
from nanogpt.training.downstream import DownstreamTasks
from nanogpt.errors import NanoGPTError, exhaustion
from nanogpt.training.hardware import Peak, mfu, peak_for
from nanogpt.runs.manifest import RunRecord
from nanogpt.checkpoints.sharded import is_sharded
from nanogpt.checkpoints.sharded import ShardedCheckpointWriter
from nanogpt.signals import EXIT_INTERRUPTED, StopSignals
from nanogpt.config.tables import Experiment
from nanogpt.config.canonical import to_toml
from nanogpt.training.step import Interrupted, NonFiniteLoss, TrainStep, _lost_peer
from nanogpt.training.trackers import build_trackers
from nanogpt.training.tracking import Reports, ThroughputAverage, log_spec, run_hparams


# ------------------------------------------------------------------------------- the step


def _report_failure(e: BaseException) -> int:
    """Tell the user about a failure the run's record already holds; its exit status."""
    if isinstance(e, NanoGPTError):
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    if exhaustion(e) is not None:  # a full disk or memory: no traceback needed
        print(f"error: {exhaustion(e)}; the run is marked failed, its last good checkpoint kept", file=sys.stderr)
        return 1
    traceback.print_exc()
    return 1


# ------------------------------------------------------------------------------- the loop


class RunCheckpoints:
    """A run's checkpoints as the loop sees them: saved by the writer of the run's format (`.pt`
    files, or DCP directories under fsdp) and listed in the run's record once they are on disk."""

    def __init__(self, exp: Experiment, env: DistEnv, record: RunRecord, *, sharded: bool):
        self.record, self.sharded = record, sharded
        self.keep, self.asynchronous = exp.train.keep_checkpoints, exp.train.async_checkpoint
        self.writer: Any = (
            ShardedCheckpointWriter(record.path, is_main=env.is_main, group=env.checkpoints, asynchronous=self.asynchronous)
            if sharded else CheckpointWriter(record.path)
        )

    def save(self, it: int, state: dict[str, Any], model: Any, optimizer: Any, val_loss: float | None) -> None:
        record, keep = self.record, self.keep
        if self.sharded:
            self.writer.save(it, state, model, optimizer, on_written=lambda path, digest, files: (
                record.checkpointed(path, it, digest, val_loss, keep, files=files)))
        else:
            self.writer.save(it, state, on_written=lambda path, digest: record.checkpointed(path, it, digest, val_loss, keep))
        if not self.asynchronous:
            self.writer.wait()

    def wait(self, *, last: bool = False) -> None:
        """Until the save in flight is on disk and listed; raises what made it fail. After the `last`
        save of a run, the writer lets go of what it kept for the run's saves."""
        self.writer.wait()
        if last:
            self.writer.close()

    def kept_text(self) -> str:
        """Which checkpoint a stopped run keeps, in words."""
        last = self.record.last_checkpoint()
        if last is None:
            return "and it had saved no checkpoint yet"
        return f"and its last good checkpoint ({last['path']}, iteration {last['step']}) is kept"


class Trainer:
    """The loop around `TrainStep`: evaluation, logging, checkpoints, signals; it says what happened,
    and the run's record, tracking and checkpoint modules say how that is written down."""

    def __init__(self, exp: Experiment, env: DistEnv, data: Batches, model: LanguageModel, optimizer: torch.optim.Optimizer,
                 lr_at: Any, record: RunRecord, stop: StopSignals, *, resumed: bool = False,
                 checkpoint: Path | None = None, state: dict[str, Any] | None = None):
        self.exp, self.env, self.data, self.optimizer, self.record, self.stop, self.raw_model = exp, env, data, optimizer, record, stop, model
        self.train_cfg = exp.train
        self.tokens_per_iter = exp.tokens_per_iter
        self.peak: Peak = peak_for(env.device, env.dtype, exp.system.peak_tflops)
        self.flops_per_token = model.flops_per_token()
        self.iter = 0
        self.best_val_loss = math.inf
        self.metrics: dict[str, Any] = {}
        self.wall_before = 0.0  # wall seconds of earlier sessions of this run
        self.throughput = ThroughputAverage(lambda tokens_per_sec: mfu(self.flops_per_token, tokens_per_sec, self.peak, env.world_size))
        self.session_start = time.perf_counter()
        self.checkpoints = RunCheckpoints(exp, env, record, sharded=is_sharded(model))
        # before wrapping: DDP starts from these weights (fsdp's shards were made already: each process
        # reads its own part)
        restored = restore_training_state(checkpoint, state, model, optimizer, env.device) if checkpoint else None
        if restored is not None:
            self.iter, self.best_val_loss = restored.iteration, restored.best_val_loss
            self.wall_before, self.metrics = restored.wall_seconds, restored.metrics
        self.step = TrainStep(exp, env, data, model, optimizer, lr_at)
        self.downstream = DownstreamTasks(exp.evaluation, data.tokenizer, eval_interval=exp.train.eval_interval)  # read now: fails before training
        if restored is not None and restored.scaler:
            self.step.scaler.load_state_dict(restored.scaler)
        # a resumed run hides what it logged after its checkpoint (or everything, when it starts over)
        tracker = build_trackers(record, exp.logging, is_main=env.is_main, purge_step=self.iter if resumed else None)
        self.reports = Reports(record.path, tracker, is_main=env.is_main, wall_seconds=self._wall_seconds)
        self.reports.metrics.truncate(self.iter)
        if checkpoint is not None:
            self.reports.console.say(f"resuming {record.path} from {checkpoint.name} (iteration {self.iter})")

    def train(self) -> int:
        cfg = self.train_cfg
        self.reports.console.announce(
            name=self.exp.name, run_path=self.record.path, dataset=getattr(self.exp.data, "dataset", self.exp.data.kind),
            data=self.record.get("data", {}), model=self.record.get("model", {}), world_size=self.env.world_size,
            device=f"{self.env.device} ({str(self.env.dtype).removeprefix('torch.')})",
            tokens_per_iter=self.tokens_per_iter, compile=self.exp.system.compile,
        )
        if self.record.run is not None and self.iter == 0:
            log_spec(self.reports.tracker, to_toml(self.exp), self.record.get("provenance") or {}, self.record.get("extends") or {})
        self.session_start = time.perf_counter()
        try:
            # the first iteration whose loss was not finite, tracked on the device (no sync per step)
            first_bad = torch.full((), -1, dtype=torch.long, device=self.env.device)
            t_log, iters_since_log = time.perf_counter(), 0
            while True:
                it = self.iter
                t_log += self.downstream.score_if_due(it, self)  # first: the checkpoint an evaluation saves holds its figures
                if cfg.eval_only or it % cfg.eval_interval == 0 or it == cfg.max_iters:
                    self._evaluate_and_checkpoint(it)
                    t_log, iters_since_log = time.perf_counter(), 0  # evaluation time is not training throughput
                if cfg.eval_only or it >= cfg.max_iters:
                    break
                if self.stop.agreed(self.env, it, cfg.log_interval):
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
            self.reports.console.say(
                f"interrupted at iteration {self.iter}; checkpoint saved. Resume with: "
                f"nanogpt run --resume {self.record.path}"
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
            with contextlib.suppress(BaseException):
                self.checkpoints.wait()  # a checkpoint already being written is a good one: keep it listed
            self.record.fail(message.strip(), lost_peer=self.env.distributed and _lost_peer(e), distributed=self.env.distributed,
                             progress=self._progress(self.iter))
            self.reports.tracker.ended("failed")
            return _report_failure(e)
        finally:
            self.reports.tracker.close()

    def _evaluate_and_checkpoint(self, it: int) -> None:
        losses = self.step.estimate_loss(self.train_cfg.eval_iters, should_stop=lambda r, every: self.stop.agreed(self.env, r, every))
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
            train_loss=train_loss, val_loss=val_loss, best_val_loss=self.best_val_loss,
            train_perplexity=math.exp(min(train_loss, 700)), val_perplexity=math.exp(min(val_loss, 700)),
        )
        self.reports.evaluation(it, train_loss, val_loss, self.metrics["train_perplexity"], self.metrics["val_perplexity"])
        self._log_samples(it)
        if it > 0 and not self.train_cfg.eval_only:
            self._save_checkpoint(it, val_loss=val_loss, best=improved)
        self.record.progress(**self._progress(it))

    def _log_samples(self, it: int) -> None:
        n = self.exp.logging.samples
        # under fsdp every rank generates (the same text): each forward gathers the weights from all of them
        generates = self.env.is_main or self.step.sharded
        if not generates or n == 0 or not self.exp.logging.writes_tensorboard or self.data.tokenizer is None:
            return
        if self.env.distributed and it < self.train_cfg.max_iters and not self.train_cfg.eval_only:
            return  # every other GPU would wait for rank 0's generation: in a job, only at the end
        from nanogpt.models.generation import generate_texts

        texts = generate_texts(
            self.raw_model, self.data.tokenizer, start=None, num_samples=n, max_new_tokens=self.exp.logging.sample_tokens,
            seed=self.exp.seed + it, device=self.env.device, autocast=self.step.autocast,
        )
        if self.env.is_main:
            self.last_samples = texts
            self.reports.samples(it, texts)

    def _log_train(self, it: int, loss_sum: torch.Tensor, grad_norm: torch.Tensor | None, lr: float, first_bad: torch.Tensor, t_log: float, iters: int) -> None:
        # the one host sync of a logging step: the loss of the global batch, summed over ranks
        loss = self.env.sum(loss_sum.float().clone()).item() / self.train_cfg.grad_accum
        # a NaN on one rank reaches every rank through the gradient all-reduce, so each rank
        # stops at the same logging step
        bad_at = int(first_bad.item())
        if bad_at >= 0 or not math.isfinite(loss):
            raise NonFiniteLoss(
                f"the training loss is not finite at iteration {bad_at if bad_at >= 0 else it}; the run stopped, "
                f"{self._kept_checkpoint_text()} (try a lower optimizer.lr or optimizer.grad_clip)"
            )
        dt = time.perf_counter() - t_log
        tokens_per_sec = self.tokens_per_iter * iters / dt if dt > 0 else 0.0
        util = mfu(self.flops_per_token, tokens_per_sec, self.peak, self.env.world_size)
        self.throughput.add(self.metrics, self.tokens_per_iter * iters, dt, tokens_per_sec)
        self.metrics.update(last_train_step_loss=loss)
        group_lrs = {g["role"]: g["lr"] for g in self.optimizer.param_groups if "role" in g} or None
        self.reports.train_window(it, loss=loss, lr=lr, grad_norm=grad_norm.item() if grad_norm is not None else None,
                                  tokens_per_sec=tokens_per_sec, mfu=util, ms_per_iter=dt / iters * 1000, group_lrs=group_lrs)

    def _kept_checkpoint_text(self) -> str:
        with contextlib.suppress(Exception):
            self.checkpoints.wait()
        return self.checkpoints.kept_text()

    def _save_checkpoint(self, it: int, val_loss: float | None, best: bool = False) -> None:
        if self.record.run is None and not self.step.sharded:  # under fsdp every rank writes its shards
            return
        state = training_state(
            model=self.raw_model, optimizer=self.optimizer, scaler=self.step.scaler, tokenizer=self.data.tokenizer,
            iteration=it, best_val_loss=self.best_val_loss, val_loss=val_loss, spec=self.record.get("spec"),
            spec_sha256=self.record.get("spec_sha256"), metrics=self.metrics, wall_seconds=self._wall_seconds(),
        )
        self.checkpoints.save(it, state, self.raw_model, self.optimizer, val_loss)

    def _wall_seconds(self) -> float:
        return self.wall_before + time.perf_counter() - self.session_start

    def _progress(self, it: int) -> dict[str, Any]:
        return dict(iteration=it, tokens_seen=it * self.tokens_per_iter, wall_seconds=self._wall_seconds(), metrics=self.metrics)

    def _finish(self, status: str, error: str | None = None, failure: str | None = None, *, wait_for_checkpoint: bool = True) -> None:
        if wait_for_checkpoint:
            self.checkpoints.wait(last=status == "completed")  # a run is done once its last checkpoint is on disk and listed
        self.record.progress(**self._progress(self.iter))
        if self.record.run is None:
            return
        self.reports.tracker.ended(status)
        self.reports.tracker.hparams(
            run_hparams(self.record.run.manifest),
            {"loss/val": self.metrics.get("val_loss"), "loss/train": self.metrics.get("train_loss")},
        )
        self.record.finish(status, error, failure)
        if status == "completed":
            self.reports.console.say(
                f"done: {self.iter} iterations, best val loss {self.best_val_loss:.4f}\n"
                f"run dir: {self.record.path}\n"
                f"watch:   tensorboard --logdir {self.exp.logging.out_dir}"
            )
            samples = getattr(self, "last_samples", None)
            if samples:
                self.reports.console.say("sample:\n" + samples[0])
