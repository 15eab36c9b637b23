"""One optimizer step of the global batch (`TrainStep`), and the loss estimate on fixed batches.

A step is a pure function of (seed, iteration): every micro-batch and every random draw (dropout)
is seeded from them and the rank, so a resumed run, or one on another number of processes, takes
the same steps. Under ddp the gradient all-reduce runs on the last micro-batch only; under fsdp
FSDP2 reduce-scatters it; the loss is summed on the device and read back only at logging steps."""

from __future__ import annotations
import contextlib
import math
from collections.abc import Callable
from typing import Any
import torch
from nanogpt.contracts import Batches, LanguageModel
from nanogpt.training.dist import DistEnv
from nanogpt.errors import InputError, NanoGPTError
from nanogpt.checkpoints.sharded import is_sharded
from nanogpt.training.parallel import clip_grad_norm_
from nanogpt.config.tables import Experiment


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


class TrainStep:
    """One optimizer step, and the loss estimate, exactly as the runner and `bench` both run them."""

    def __init__(self, exp: Experiment, env: DistEnv, data: Batches, model: LanguageModel, optimizer: torch.optim.Optimizer, lr_at: Any):
        self.env, self.data, self.optimizer, self.lr_at = env, data, optimizer, lr_at
        self.seed = exp.seed
        self.peak_lr = exp.optimizer.lr  # the schedule's rate over it is the multiplier of each group's base_lr
        self.grad_accum = exp.train.grad_accum
        self.grad_clip = float(getattr(exp.optimizer, "grad_clip", 0.0))
        self.raw_model = model
        # under fsdp the model is already sharded (nanogpt.training.parallel), and its precision is FSDP's policy
        self.sharded = is_sharded(model)
        self.autocast = (
            torch.autocast(device_type=env.device_type, dtype=env.dtype)
            if env.dtype != torch.float32 and not self.sharded
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
        if exp.system.compile and not self.sharded:  # fsdp compiles block by block
            self.model = torch.compile(self.model)
        if env.distributed and not self.sharded:
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
            # a group with a base rate of its own (Muon's) gets the schedule's multiplier of it
            group["lr"] = lr if "base_lr" not in group else group["base_lr"] * (lr / self.peak_lr)
        # dropout's randomness, like the batches, is a function of (seed, iteration, rank): a
        # resumed run draws the same masks without any RNG state to restore
        self._seed_rng(hash((self.seed, it, self.env.rank)) & 0x7FFF_FFFF_FFFF_FFFF)
        # each rank's share is averaged over its micro-batches; DDP's average over ranks then
        # makes the gradient the mean over all grad_accum micro-batches of the job
        scale = 1.0 / len(self.micro)
        loss_sum = torch.zeros((), device=self.env.device)
        for i, (x, y) in enumerate(self.data.train_batches(it, self.grad_accum)):
            last = i == len(self.micro) - 1
            # gradients are reduced once per step, on the last micro-batch, not on each
            if self.sharded:
                self.model.set_requires_gradient_sync(last)
            no_sync = self.env.distributed and not last and not self.sharded
            with self.model.no_sync() if no_sync else contextlib.nullcontext():
                with self.autocast:
                    _, loss = self.model(x, y)
                loss_sum += loss.detach()
                self.scaler.scale(loss * scale).backward()
        grad_norm = None
        if self.grad_clip > 0 or want_norm:
            self.scaler.unscale_(self.optimizer)
            clip = self.grad_clip if self.grad_clip > 0 else math.inf
            grad_norm = clip_grad_norm_(self.raw_model.parameters(), clip)
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
                # a fixed validation set (data.val_tokens) has its own number of batches
                count = getattr(self.data, "eval_count", lambda _s, n: n)(split, eval_iters)
                # rounds of one batch per rank; a rank past its share still takes part in the checks
                # (and under fsdp in the forward too, on a batch it does not count: every forward
                # gathers each block's weights from all ranks)
                for r in range(-(-count // world)):
                    if should_stop is not None and should_stop(r, self.EVAL_STOP_CHECK):
                        return None
                    if r < len(keys) or (self.sharded and keys):
                        x, y = self.data.to_device(self.data.batch(split, keys[min(r, len(keys) - 1)]))
                        with self.autocast:
                            _, loss = self.model(x, y)
                        if r < len(keys):
                            total += loss.float()
                out[split] = (self.env.sum(total) / count).item()
        finally:
            self.model.train()
        return out
