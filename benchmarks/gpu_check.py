"""The GPU check: GPT-2 124M training steps on one GPU, ours against our rewrites of nanoGPT today and of the seed (not their code), in under 8 minutes.

    python benchmarks/gpu_check.py                 # the full check on a CUDA device (5-7 minutes on an H200, by estimate)
    python benchmarks/gpu_check.py --dry-run       # tiny sizes, a few steps, no compile (what runs without CUDA)
    python benchmarks/gpu_check.py --json out.json --budget 300 --batch 32 --grad-accum 2

What it prints (block 1024, bf16 autocast, torch.compile, GPT-2 124M: 12 x 768, vocab 50257):

1. The main table: ms/iter, tokens/s, MFU and peak memory of
   - ours: the product's own training step (`nanogpt.training.step.TrainStep` built from
     experiments/bench.toml, fused AdamW, flash attention through SDPA, vocab padded to 50304,
     batches prepared one micro-step ahead, no host sync in the step) at a batch that keeps the
     GPU busy (16 x 1024 tokens a micro-step, 4 micro-steps an iteration by default), and at the
     seed's batch (8 x 1024, 1 micro-step);
   - the seed: benchmarks/seed_model.py (manual attention over a materialised T x T matrix, GELU
     in five ops, untied head) in the seed's bench.py loop: batch 8 x 1024, bf16, TF32, compiled,
     torch.optim.AdamW without `fused`, `loss.item()` every step;
     and the same loop without its per-step `loss.item()` (what that sync costs the seed);
   - nanoGPT today (benchmarks/nanogpt_today.py, written from its published description: flash
     SDPA, fused AdamW, the head tied to a 50304-row table, compiled, memmap batches pinned and
     copied non_blocking, the loss read back only on logging steps) at ours' busy batch: the
     like-for-like baseline, the recipe users run now;
   each with synthetic batches (random tokens made once on the device, the seed's
   `real_data = False`) and real-shaped ones: a memory map of random uint16 tokens (OpenWebText's
   dtype, GPT-2's vocabulary) written to a temporary directory, sampled by the product's own
   `TokenBatches` for ours and by the seed's get_batch for the seed. No download.
2. The ratios ours / seed and ours / nanoGPT today (tokens/s), and the checkpoint stall: how long
   a checkpoint of ours (weights and AdamW moments) holds up the loop, saved synchronously as the
   runner did before against the background writer it uses now.
   - a llama of the same class (the product's step with `model.kind = "llama"`: 12 x 768, 12 heads,
     SwiGLU width 2048, tied head, RoPE, RMSNorm) at ours' busy batch, synthetic batches: the
     second model kind's MFU, by the same FLOPs accounting.
3. Memory: peak memory of ours (eager, the seed's batch) under ddp and under fsdp in a job of one
   process, each with and without activation checkpointing, against what `nanogpt scaling memory`
   plans for it (nanogpt/perf/memory.py); the fsdp rows are the sharded path's first steps on a GPU.
4. Fast paths, each on against off on the same setting: flash SDPA (against the math kernel), fused
   AdamW (against foreach), TF32 (in float32, where it matters), torch.compile (and its start-up
   cost), vocab padding to a multiple of 64, no host sync per step, the host-to-device copy of
   the batches (the product's x and y, each made contiguous and pinned, against both filled into
   one pinned (2, B, T) buffer), and what `system.deterministic = true` costs.

MFU is nanoGPT's: tokens/s x FLOPs per token / peak FLOP/s, with FLOPs per token = 6N + 12·L·H·Q·T
(N the non-embedding parameters with the head counted once, L layers, H heads, Q head size,
T block size; PaLM's appendix B), and the peak from nanogpt/training/hardware.py's table of exact device
names (the entry used is printed; "NVIDIA H200": 989.4 TFLOP/s dense bf16; a device not in the
table gets no MFU rather than a near name's). Times are medians of blocks of steps, each block
ended by one device sync (the runner does not sync on non-logging steps either).

CUBLAS_WORKSPACE_CONFIG is set to ":4096:8" before any CUDA work (see `fix_cublas_workspace`),
so the deterministic row can turn determinism on.

5. The real loop and what only a GPU shows: the runner itself (`nanogpt run` in this process) under
   fsdp + compile for a few dozen steps, with evaluations, samples (and whether they exhausted
   dynamo's recompile limit), DCP async saves and a resume; the training step under
   `torch.cuda.set_sync_debug_mode("error")` (a host sync inside it fails the section); and the
   page-locked bytes the checkpoint writer keeps.

Every section runs under its own time limit, and sections stop being started when the budget
(--budget, default 420 s) is nearly spent, so the whole check stays under 8 minutes; a skipped or
failed section says so in the table and the rest still run. The eager sections (stall, memory,
fast paths, syncs) run first and the runner loop next, so a budget spent on compiles skips only
compiled rows (not yet timed on a GPU: the budgets are estimates).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nanogpt.config import sizes

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ itself, when run from elsewhere
from common import REPO, load_average, machine_line, median
from seed_model import SeedConfig, SeedGPT

SPEC = REPO / "experiments" / "bench.toml"
SPEEDRUN = REPO / "experiments" / "speedrun_gpt2.toml"
GPT2_VOCAB = 50257
MFU_TARGET = 0.50
DETERMINISTIC_WORKSPACE = ":4096:8"


# ----------------------------------------------------------------------------- settings


class Settings:
    """Sizes and step counts of one check: the real one, or the CPU dry run."""

    def __init__(self, dry_run: bool, args: argparse.Namespace):
        self.dry_run = dry_run
        # an indexed device: DistEnv hands it to torch.cuda.set_device, which refuses a bare "cuda"
        self.device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() and not dry_run else torch.device("cpu")
        if dry_run:
            # GPT-2's vocabulary (the real-shaped data's) on a model small enough for seconds on a CPU
            self.model = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
            self.seed_batch, self.busy_batch, self.busy_accum = 2, 2, 2
            self.big_batch, self.big_accum = 4, 1
            self.compile = args.compile  # off unless asked: compiling on a CPU takes minutes
            self.warmup, self.blocks, self.per_block = 1, 2, 2
            self.eager_per_block = 2
            self.memmap_tokens = 1 << 20
            self.runner_iters = 8
        else:
            self.model = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024}
            self.seed_batch, self.busy_batch, self.busy_accum = 8, args.batch, args.grad_accum
            self.big_batch, self.big_accum = 32, 2
            self.compile = True
            self.warmup, self.blocks, self.per_block = 3, 3, 10
            self.eager_per_block = 6
            self.memmap_tokens = 128 << 20
            self.runner_iters = 40  # a few dozen steps: 4 evaluations, 4 saves, one resume  # 256 MB: random windows over more than any cache but the page cache
        self.block_size = self.model["block_size"]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


class SectionTimeout(Exception):
    pass


# ------------------------------------------------------------------------------ results


class Row:
    """One measured configuration: what ran, and its figures (or why there are none)."""

    def __init__(self, key: str, label: str, data: str, batch: int, accum: int, block: int):
        self.key, self.label, self.data = key, label, data
        self.batch, self.accum, self.block = batch, accum, block
        self.ms: float | None = None
        self.tokens_per_sec: float | None = None
        self.mfu: float | None = None
        self.peak_bytes: int | None = None
        self.startup_s: float | None = None

    @property
    def tokens_per_iter(self) -> int:
        return self.batch * self.accum * self.block

    def set(self, ms: float, flops_per_token: float, peak_flops: float | None, peak_bytes: int, startup_s: float) -> None:
        self.ms = ms
        self.tokens_per_sec = self.tokens_per_iter / (ms / 1000)
        self.mfu = sizes.mfu(flops_per_token, self.tokens_per_sec, peak_flops) if peak_flops else None
        self.peak_bytes, self.startup_s = peak_bytes, startup_s

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items()} | {"tokens_per_iter": self.tokens_per_iter}


# --------------------------------------------------------------------------------- data


class RealShaped:
    """A random uint16 token file of GPT-2's vocabulary, opened as the product opens a prepared dataset."""

    def __init__(self, directory: Path, tokens: int):
        from nanogpt.data.files import PreparedDataset

        rng = np.random.default_rng(0)
        maps = {}
        for split, n in (("train", tokens), ("val", max(tokens // 100, 1 << 16))):
            path = directory / f"{split}.bin"
            out = np.memmap(path, dtype=np.uint16, mode="w+", shape=(n,))
            for start in range(0, n, 1 << 24):  # in 32 MB pieces: no 2x peak of host memory
                stop = min(n, start + (1 << 24))
                out[start:stop] = rng.integers(0, GPT2_VOCAB, size=stop - start, dtype=np.uint16)
            out.flush()
            del out
            maps[split] = np.memmap(path, dtype=np.uint16, mode="r")
        self.train_path = directory / "train.bin"
        meta = {"dataset": "random-owt-shaped", "tokenizer": "gpt2", "vocab_size": GPT2_VOCAB, "dtype": "uint16"}
        self.dataset = PreparedDataset(dir=directory, meta=meta, train=maps["train"], val=maps["val"])


def one_pinned_buffer_batches():
    """TokenBatches whose x and y are the two halves of one pinned (2, B, T) buffer (the same windows, the same values).

    The product's batch() makes x and y contiguous and pins each (two pinned allocations and
    copies a batch); this variant allocates one pinned buffer and copies both into it. The check
    times the product's layout against this one.
    """
    from nanogpt.data.batches import TokenBatches
    from nanogpt.data.shards import windows

    class OnePinnedBufferBatches(TokenBatches):
        def batch(self, split: str, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
            data = self.arrays[split]
            rng = np.random.default_rng([self.seed, *key])
            starts = rng.integers(0, len(data) - self.block_size, size=self.batch_size)
            tokens = torch.from_numpy(windows(data, starts, self.block_size + 1).astype(np.int64))  # (B, T+1)
            xy = torch.empty((2, self.batch_size, self.block_size), dtype=torch.int64, pin_memory=self._pin)
            xy[0].copy_(tokens[:, :-1])
            xy[1].copy_(tokens[:, 1:])
            return xy[0], xy[1]

    return OnePinnedBufferBatches


# ------------------------------------------------------------------------ the two steps


def product_step(s: Settings, overrides: list[str], batch: int, accum: int):
    """The product's TrainStep for experiments/bench.toml at this batch: (step, FLOPs per token, spec, DistEnv)."""
    from nanogpt.training.dist import DistEnv
    from nanogpt.training.parallel import build_model
    from nanogpt.registry import OPTIMIZERS, SCHEDULES
    from nanogpt.config.load import load_spec
    from nanogpt.training.runner import configure_backends
    from nanogpt.training.step import TrainStep

    sizes = [f"model.{k}={v}" for k, v in s.model.items()]
    exp, _ = load_spec(
        SPEC,
        [*sizes, f"train.batch_size={batch}", f"train.grad_accum={accum}", f'system.device="{s.device}"',
         'system.dtype="bfloat16"', f"system.compile={'true' if s.compile else 'false'}", *overrides],
        check_files=False,
    )
    env = DistEnv.from_env(exp.system)
    configure_backends(exp, env)
    torch.manual_seed(exp.seed)
    from nanogpt.perf.bench import SyntheticBatches

    data = SyntheticBatches(vocab_size=GPT2_VOCAB, batch_size=batch, block_size=s.block_size, env=env, seed=exp.seed)
    model = build_model(exp, env, GPT2_VOCAB)
    optimizer = OPTIMIZERS.build(exp.optimizer, model=model)
    lr_at = SCHEDULES.build(exp.schedule, lr=exp.optimizer.lr)
    return TrainStep(exp, env, data, model, optimizer, lr_at), model.flops_per_token(), exp, env


def speedrun_overrides() -> list[str]:
    """experiments/speedrun_gpt2.toml as overrides of bench.toml: every model field it sets otherwise, but
    the sizes (the check's own), and its whole optimizer table (Muon with AdamW, the speedrun's rates)."""
    import attrs

    from nanogpt.config.canonical import toml_value
    from nanogpt.config.load import load_spec

    bench, _ = load_spec(SPEC, check_files=False)
    speedrun, _ = load_spec(SPEEDRUN, check_files=False)
    ours, theirs = attrs.asdict(bench.model), attrs.asdict(speedrun.model)
    sized = {"n_layer", "n_head", "n_embd", "block_size"}
    model = [f"model.{k}={toml_value(v)}" for k, v in theirs.items() if k not in sized and v != ours.get(k) and v is not None]
    optimizer = [f"optimizer.{k}={toml_value(v)}" for k, v in attrs.asdict(speedrun.optimizer).items() if v is not None]
    return model + optimizer


class SeedLoop:
    """The seed's bench.py loop around the seed's model: get_batch, autocast, zero_grad, backward, step, item."""

    def __init__(self, s: Settings, batch: int, compile: bool):
        torch.backends.cuda.matmul.allow_tf32 = True  # the seed's bench.py turns TF32 on
        torch.backends.cudnn.allow_tf32 = True
        torch.manual_seed(1337)
        self.s, self.batch, self.T = s, batch, s.block_size
        cfg = SeedConfig(**s.model, vocab_size=GPT2_VOCAB, dropout=0.0)
        model = SeedGPT(cfg).to(s.device)
        # the seed's configure_optimizers: Linear weights decay; biases, LayerNorms and embeddings do not
        decay = {f"{mn}.weight" for mn, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
        params = dict(model.named_parameters())
        groups = [
            {"params": [p for n, p in params.items() if n in decay], "weight_decay": 1e-2},
            {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
        ]
        self.optimizer = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95))  # no fused: the seed predates it
        self.model = torch.compile(model) if compile else model
        self.autocast = torch.autocast(device_type=s.device.type, dtype=torch.bfloat16)
        n = sizes.params(**s.model, vocab_size=GPT2_VOCAB, bias=True)
        self.flops_per_token = sizes.mfu_flops_per_token(
            n_params=n, n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd, block_size=self.T
        )
        self.use_synthetic()

    def use_synthetic(self) -> None:
        """The seed's `real_data = False`: one fixed batch, made on the device."""
        x = torch.randint(GPT2_VOCAB, (self.batch, self.T), device=self.s.device)
        y = torch.randint(GPT2_VOCAB, (self.batch, self.T), device=self.s.device)
        self.get_batch = lambda: (x, y)

    def use_memmap(self, train: np.memmap) -> None:
        """The seed's `real_data = True`: random windows, stacked one by one, copied without pinning."""
        T, batch, device = self.T, self.batch, self.s.device

        def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
            ix = torch.randint(len(train) - T, (batch,))
            x = torch.stack([torch.from_numpy(train[i:i + T].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(train[i + 1:i + 1 + T].astype(np.int64)) for i in ix])
            return x.to(device), y.to(device)

        self.get_batch = get_batch

    sync_every_step = True
    """The seed's bench.py prints every step's loss (`loss.item()`, a host sync); off for the row without it."""

    def __call__(self, it: int) -> None:
        X, Y = self.get_batch()
        with self.autocast:
            _, loss = self.model(X, Y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.sync_every_step:
            loss.item()


# ------------------------------------------------------------------------------- timing


def peak_memory(s: Settings) -> int:
    if s.device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(s.device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)  # the process's peak RSS


def reset_memory(s: Settings) -> None:
    gc.collect()
    if s.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(s.device)


def time_steps(s: Settings, step: Callable[[int], Any], *, warmup: int, blocks: int, per_block: int) -> tuple[float, float]:
    """(median ms/iter over `blocks` blocks of `per_block` steps, seconds spent in the warm-up steps)."""
    s.sync()
    t0 = time.perf_counter()
    for it in range(warmup):
        step(it)
    s.sync()
    warm = time.perf_counter() - t0
    times = []
    it = warmup
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(per_block):
            step(it)
            it += 1
        s.sync()  # one sync per block, as the runner syncs only on logging steps
        times.append((time.perf_counter() - t) / per_block * 1000)
    return median(times), warm


def measure(s: Settings, row: Row, step: Callable[[int], Any], flops: float, peak_flops: float | None, *, warmup: int | None = None, per_block: int | None = None) -> Row:
    reset_memory(s)
    w = s.warmup if warmup is None else warmup
    ms, warm = time_steps(s, step, warmup=w, blocks=s.blocks, per_block=per_block or s.per_block)
    row.set(ms, flops, peak_flops, peak_memory(s), startup_s=max(0.0, warm - w * ms / 1000))
    return row


# ----------------------------------------------------------------------------- sections


class Check:
    def __init__(self, s: Settings, budget: float, work: Path):
        from nanogpt.training.hardware import peak_for

        self.s = s
        self.deadline = time.monotonic() + budget
        self.rows: dict[str, Row] = {}
        self.sections: list[tuple[str, str]] = []  # (name, outcome)
        self.peak = peak_for(s.device, torch.bfloat16)
        self.peak_fp32 = peak_for(s.device, torch.float32)
        t = time.perf_counter()
        self.work = work
        self.real = RealShaped(work, s.memmap_tokens)
        self.memmap_seconds = time.perf_counter() - t
        self.stall: dict[str, list[float]] = {"synchronous": [], "background-first": [], "background": []}
        self.stall_bytes = 0
        self.pinned_bytes: int | None = None
        self.runner: dict[str, Any] = {}  # the runner loop's row: iterations, evaluations, checkpoints, recompiles
        self.sync_free: str | None = None  # the step under set_sync_debug_mode("error"): what happened
        self.planned: dict[str, int] = {}  # memory rows: nanogpt.perf.memory's planned bytes for the process

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def section(self, name: str, fn: Callable[[], None], *, timeout: float, needs: float) -> None:
        """Run one section under its own time limit, unless the budget cannot fit what it needs."""
        if self.left() < needs:
            self.sections.append((name, f"skipped: {self.left():.0f} s of the budget left, it needs about {needs:.0f} s"))
            return
        limit = max(1, int(min(timeout, self.left())))
        t0 = time.perf_counter()

        def on_alarm(signum: int, frame: Any) -> None:
            raise SectionTimeout

        previous = signal.signal(signal.SIGALRM, on_alarm) if hasattr(signal, "SIGALRM") else None
        if previous is not None:
            signal.alarm(limit)
        try:
            fn()
            outcome = f"done in {time.perf_counter() - t0:.0f} s"
        except SectionTimeout:
            outcome = f"TIMED OUT after {limit} s (rows without figures were not reached)"
        except Exception as e:  # noqa: BLE001 -- one failing section (an OOM, a compile error) must not lose the others
            outcome = f"FAILED: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            traceback.print_exc(file=sys.stderr)
        finally:
            if previous is not None:
                signal.alarm(0)
                signal.signal(signal.SIGALRM, previous)
            reset_memory(self.s)
            if self.s.compile:
                torch._dynamo.reset()  # the next section compiles its own shapes from scratch, not as dynamic ones
        self.sections.append((name, outcome))
        print(f"[{name}: {outcome}; {self.left():.0f} s of the budget left]", file=sys.stderr, flush=True)

    def row(self, key: str, label: str, data: str, batch: int, accum: int) -> Row:
        r = Row(key, label, data, batch, accum, self.s.block_size)
        self.rows[key] = r
        return r

    # ------------------------------------------------------------------ the main table

    def ours(self, tag: str, batch: int, accum: int, extras: bool) -> None:
        """Ours compiled at this batch: synthetic, real-shaped (and, with extras, the data and sync variants)."""
        from nanogpt.data.batches import TokenBatches

        s = self.s
        step, flops, exp, env = product_step(s, [], batch, accum)
        synthetic = step.data
        label = f"ours {'compile' if s.compile else 'eager'} bf16"
        measure(s, self.row(f"ours{tag}/synthetic", label, "synthetic", batch, accum), step, flops, self.peak.flops)
        startup = self.rows[f"ours{tag}/synthetic"].startup_s
        real = TokenBatches(self.real.dataset, seed=exp.seed, batch_size=batch, block_size=s.block_size, env=env)
        step.data = real
        r = measure(s, self.row(f"ours{tag}/real", label, "real-shaped", batch, accum), step, flops, self.peak.flops, warmup=1)
        r.startup_s = startup
        if not extras:
            return
        step.data = one_pinned_buffer_batches()(self.real.dataset, seed=exp.seed, batch_size=batch, block_size=s.block_size, env=env)
        measure(s, self.row(f"ours{tag}/real-contiguous", label, "real, one pinned buffer", batch, accum), step, flops, self.peak.flops, warmup=1)
        step.data = synthetic

        def synced(it: int) -> None:
            step(it)[0].item()  # a host sync on every step: what the runner does only when logging

        measure(s, self.row(f"ours{tag}/sync-every-step", label, "synthetic, .item() each step", batch, accum), synced, flops, self.peak.flops, warmup=1)

    def llama(self, batch: int, accum: int) -> None:
        """The product's step on a llama of GPT-2 124M's class (its depth, width, heads, block, tied head; SwiGLU
        width 8·n_embd/3, so the same weights), synthetic batches: what the second model kind reaches."""
        s = self.s
        width = 8 * round(s.model["n_embd"] / 3)
        step, flops, _, _ = product_step(s, ["model.kind=llama", f"model.intermediate_size={width}", "model.tie_embeddings=true",
                                             *(f"model.{k}={v}" for k, v in s.model.items())], batch, accum)
        measure(s, self.row("llama/synthetic", f"llama {'compile' if s.compile else 'eager'} bf16", "synthetic", batch, accum),
                step, flops, self.peak.flops)

    def speedrun(self, batch: int, accum: int) -> None:
        """The product's step with the speedrun spec's recipe (Muon, rotary, RMSNorm, qk-norm, ReLU², soft-cap, untied
        head) at GPT-2 124M's size, synthetic batches: its tokens/s and MFU (the model's FLOPs; Muon's Newton-Schulz
        is the optimizer's, outside MFU as AdamW's is)."""
        s = self.s
        step, flops, _, _ = product_step(s, speedrun_overrides(), batch, accum)
        label = f"speedrun recipe {'compile' if s.compile else 'eager'} bf16"
        measure(s, self.row("speedrun/synthetic", label, "synthetic", batch, accum), step, flops, self.peak.flops)

    def seed(self, tag: str, batch: int) -> None:
        s = self.s
        label = f"seed rewrite {'compile' if s.compile else 'eager'} bf16"
        loop = SeedLoop(s, batch, s.compile)
        measure(s, self.row(f"seed{tag}/synthetic", label, "synthetic", batch, 1), loop, loop.flops_per_token, self.peak.flops)
        startup = self.rows[f"seed{tag}/synthetic"].startup_s
        loop.sync_every_step = False
        measure(s, self.row(f"seed{tag}/no-sync", label, "synthetic, no .item() per step", batch, 1), loop, loop.flops_per_token, self.peak.flops, warmup=1)
        loop.sync_every_step = True
        loop.use_memmap(self.real.dataset.train)  # same shapes: the compiled model is reused
        r = measure(s, self.row(f"seed{tag}/real", label, "real-shaped", batch, 1), loop, loop.flops_per_token, self.peak.flops, warmup=1)
        r.startup_s = startup

    def today(self, batch: int, accum: int) -> None:
        """nanoGPT as it is today (benchmarks/nanogpt_today.py) at ours' batch: the like-for-like baseline."""
        from nanogpt_today import TodayLoop

        s = self.s
        label = f"nanoGPT-today rewrite {'compile' if s.compile else 'eager'} bf16"  # no biases (its training config's)
        loop = TodayLoop(s.model, s.device, batch, accum, s.compile)
        flops = loop.flops_per_token()
        measure(s, self.row("today/synthetic", label, "synthetic", batch, accum), loop, flops, self.peak.flops)
        startup = self.rows["today/synthetic"].startup_s
        loop.use_memmap(str(self.real.train_path))
        r = measure(s, self.row("today/real", label, "real-shaped", batch, accum), loop, flops, self.peak.flops, warmup=1)
        r.startup_s = startup

    def checkpoint_stall(self) -> None:
        """How long a checkpoint of ours holds up the loop: the old synchronous save against the background writer."""
        from nanogpt.checkpoints import files as ckpt_files, state as ckpt_state
        from nanogpt.fileio import atomic_open, sha256_file

        s = self.s
        step, _, _, _ = product_step(s, ["system.compile=false"], s.seed_batch, 1)
        step(0)  # AdamW's moments exist, as in every checkpoint after the first step
        state = {"format": ckpt_state.FORMAT, "model": step.raw_model.state_dict(), "optimizer": step.optimizer.state_dict(), "iter": 1}
        self.stall_bytes = sum(t.numel() * t.element_size() for t in _tensors(state))
        folder = Path(tempfile.mkdtemp(prefix="stall-", dir=self.work))
        writer = ckpt_files.CheckpointWriter(folder)
        for i in range(3):  # the first background save allocates its pinned buffers; later ones reuse them
            s.sync()
            t = time.perf_counter()
            with atomic_open(folder / ckpt_files.CHECKPOINT_DIR / "sync.pt", "wb") as f:
                torch.save(state, f)
            sha256_file(folder / ckpt_files.CHECKPOINT_DIR / "sync.pt")
            self.stall["synchronous"].append(time.perf_counter() - t)
            t = time.perf_counter()
            writer.save(i, state, on_written=lambda path, digest: None)
            self.stall["background" if i else "background-first"].append(time.perf_counter() - t)
            writer.wait()
        self.pinned_bytes = ckpt_files.PINNED.nbytes  # page-locked while the writer keeps its buffers, as a run does

    # ------------------------------------------------------------------- memory and fsdp

    def memory(self) -> None:
        """Peak memory against nanogpt.perf.memory's plan, eager at the seed's batch: ddp and fsdp (a job of
        one process: the sharded path's first GPU steps), each with and without activation checkpointing."""
        from nanogpt.perf import memory

        s = self.s
        b = s.seed_batch
        m = s.model
        sizes = memory.GPTSizes(n_layer=m["n_layer"], n_head=m["n_head"], n_embd=m["n_embd"], block_size=s.block_size,
                                vocab_size=64 * math.ceil(GPT2_VOCAB / 64))
        for parallel in ("ddp", "fsdp"):
            for checkpointing in (False, True):
                key = f"memory/{parallel}{'/ckpt' if checkpointing else ''}"
                step, flops, _, _ = product_step(s, ["system.compile=false", f'system.parallel="{parallel}"',
                                                     f'system.activation_checkpointing="{"blocks" if checkpointing else "none"}"'], b, 1)
                label = f"ours eager bf16, {parallel}{' + ckpt' if checkpointing else ''}"
                measure(s, self.row(key, label, "synthetic", b, 1), step, flops, self.peak.flops, warmup=2, per_block=s.eager_per_block)
                self.planned[key] = memory.plan(sizes, batch=b, world_size=1, half=True, checkpointing=checkpointing)[parallel].total
                del step
                gc.collect()

    # ------------------------------------------------------------- the real loop, and syncs

    def runner_loop(self) -> None:
        """The product's runner itself (`nanogpt run`, in this process) under fsdp + compile on one device:
        iterations with evaluations, samples at each (generated eagerly), DCP async saves, then a resume
        that trains on from the last checkpoint. Its ms/iter is the loop's own (metrics.jsonl, logging
        steps included); dynamo's recompile-limit counter says whether sampling left the blocks compiled."""
        from torch._dynamo.utils import counters

        from nanogpt.cli import main as nanogpt_main

        s = self.s
        folder = Path(tempfile.mkdtemp(prefix="runner-", dir=self.work))
        corpus = folder / "corpus.txt"
        rng = np.random.default_rng(0)
        words = np.array("the king and queen of france sailed to england where lords held a feast of war and peace".split())
        corpus.write_text("\n".join(" ".join(rng.choice(words, 12)) for _ in range(3000)), encoding="utf-8")
        m = s.model
        iters = s.runner_iters
        spec = folder / "runner.toml"
        spec.write_text("\n".join([
            'name = "gpu_check_runner"', "seed = 7",
            "[model]", *(f"{k} = {v}" for k, v in m.items()),
            "[data]", 'dataset = "gpu_check_chars"', f'data_dir = "{folder / "data"}"', f'source = "file:{corpus}"',
            'tokenizer = "char"', "val_fraction = 0.1", 'split = "contiguous"',
            "[train]", f"batch_size = {s.seed_batch}", "grad_accum = 1", f"max_iters = {iters // 2}",
            f"eval_interval = {max(iters // 4, 1)}", "eval_iters = 2", f"log_interval = {max(iters // 8, 1)}",
            "[system]", f'device = "{s.device}"', f"compile = {'true' if s.compile else 'false'}", 'parallel = "fsdp"',
            'dtype = "bfloat16"',
            "[logging]", f'out_dir = "{folder / "runs"}"', "samples = 1", "sample_tokens = 32",
        ]) + "\n", encoding="utf-8")
        counters.clear()
        reset_memory(s)
        t = time.perf_counter()
        if nanogpt_main(["run", str(spec)]) != 0:
            raise RuntimeError("the runner's first half failed")
        run_dir = next(d for d in (folder / "runs" / "gpu_check_runner").iterdir() if d.is_dir() and not d.name.startswith("."))
        if nanogpt_main(["run", "--resume", str(run_dir), f"train.max_iters={iters}"]) != 0:
            raise RuntimeError("the resumed runner failed")
        wall = time.perf_counter() - t
        records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        windows = [r["ms_per_iter"] for r in records if r["kind"] == "train" and r.get("ms_per_iter") and r["iter"] > 1]
        manifest = json.loads((run_dir / "manifest.json").read_text())
        row = self.row("runner/fsdp", f"ours runner {'compile' if s.compile else 'eager'} bf16, fsdp", "char corpus, eval+samples+DCP",
                       s.seed_batch, 1)
        row.set(median(windows), 0.0, None, peak_memory(s), startup_s=0.0)
        self.runner = {
            "iterations": manifest["metrics"].get("iter"), "status": manifest["status"], "wall_s": wall,
            "evaluations": sum(r["kind"] == "eval" for r in records), "checkpoints": len(manifest.get("checkpoints", [])),
            "resumes": len(manifest.get("resumes", [])),
            "recompile_limit_hit": any("recompile_limit" in k or "recompile limit" in k for k in counters["unimplemented"]),
            "graphs": counters["stats"].get("unique_graphs", 0),
        }

    def sync_free_step(self) -> None:
        """The product's step under torch.cuda.set_sync_debug_mode("error"): any host sync inside it raises.
        On a CPU (the dry run) there is no such mode: the steps run, and the report says it was not checked."""
        s = self.s
        step, _, _, _ = product_step(s, ["system.compile=false"], s.seed_batch, 2)
        step(0)  # the first step allocates (AdamW's state) outside the checked window
        s.sync()
        if s.device.type != "cuda":
            step(1)
            self.sync_free = "not checked (no CUDA: the dry run ran the steps only)"
            return
        torch.cuda.set_sync_debug_mode("error")
        try:
            for it in range(1, 4):
                step(it)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        s.sync()
        self.sync_free = "no host sync in 3 steps (2 micro-steps each, non-logging)"

    # ------------------------------------------------------------------- fast paths

    def eager(self) -> None:
        """Ours without compile at the seed's batch: the baseline each fast path is switched off against."""
        s = self.s
        b = s.seed_batch
        per = s.eager_per_block

        def run(key: str, label: str, overrides: list[str], ctx: Any = None, peak: Any = None) -> None:
            step, flops, _, _ = product_step(s, ["system.compile=false", *overrides], b, 1)

            def fn(it: int) -> Any:
                with ctx() if ctx is not None else contextlib.nullcontext():
                    return step(it)

            # peak None: no MFU (the float32 row without TF32 has no peak of its own in the table)
            measure(s, self.row(key, label, "synthetic", b, 1), fn, flops, None if peak is False else (peak or self.peak).flops,
                    warmup=2, per_block=per)

        from torch.nn.attention import SDPBackend, sdpa_kernel

        run("eager/on", "ours eager bf16 (every fast path on)", [])
        run("eager/math-sdpa", "ours eager bf16, math SDPA (no flash)", [], ctx=lambda: sdpa_kernel([SDPBackend.MATH]))
        run("eager/foreach-adamw", "ours eager bf16, AdamW foreach (not fused)", ["optimizer.fused=false"])
        run("eager/no-pad", "ours eager bf16, vocab 50257 (not padded)", ["model.pad_vocab_multiple=1"])  # vs eager/on, padded
        run("eager/fp32-tf32", "ours eager float32, TF32 on", ['system.dtype="float32"', "system.tf32=true"], peak=self.peak_fp32)
        run("eager/fp32-no-tf32", "ours eager float32, TF32 off (no MFU)", ['system.dtype="float32"', "system.tf32=false"], peak=False)
        try:  # last: the runner turns determinism on for the whole process, and never off
            run("eager/deterministic", "ours eager bf16, system.deterministic", ["system.deterministic=true"])
        finally:
            torch.use_deterministic_algorithms(False)
            torch.backends.cudnn.deterministic = False

    # ------------------------------------------------------------------------ report

    def report(self) -> str:
        s = self.s
        out = []
        dev = torch.cuda.get_device_name(s.device) if s.device.type == "cuda" else "CPU (dry run)"
        ours_flops = self._ours_flops()
        n = ours_flops["n"]
        m = s.model
        out.append(f"device: {dev}; {machine_line()}")
        out.append(
            f"model: {m['n_layer']} layers x {m['n_embd']} (n_head {m['n_head']}), block {m['block_size']}, vocab {GPT2_VOCAB}; "
            f"real-shaped data: {s.memmap_tokens:,} random uint16 tokens, written in {self.memmap_seconds:.1f} s"
        )
        # the table entry used is named (its exact device name); an unknown device has no MFU at all
        peak_text = f"{self.peak.tflops:.4g} TFLOP/s ({self.peak.source})" if self.peak.tflops else f"none, so no MFU ({self.peak.source})"
        out.append(
            f"MFU = tokens/s x FLOPs/token / peak; FLOPs/token = 6N + 12*L*H*Q*T = 6 x {n:,} + 12 x {m['n_layer']} x "
            f"{m['n_embd']} x {m['block_size']} = {ours_flops['flops'] / 1e6:,.1f} MFLOP (ours, vocab padded); "
            f"peak {peak_text} bf16" + (f" ({self.peak_fp32.tflops:.3g} TFLOP/s for the float32 rows)" if self.peak_fp32.tflops else "")
        )
        out.append("")
        out.append(f"{'configuration':<44} {'data':<30} {'batch':>12} {'ms/iter':>9} {'tokens/s':>11} {'MFU':>6} {'peak mem':>10} {'start-up':>9}")
        for r in self.rows.values():
            batch = f"{r.batch}x{r.block}" + (f" x{r.accum}" if r.accum > 1 else "")
            if r.ms is None:
                out.append(f"{r.label:<44} {r.data:<30} {batch:>12} {'(not measured)':>9}")
                continue
            mfu = f"{r.mfu * 100:5.1f}%" if r.mfu is not None else "   n/a"
            mem = f"{r.peak_bytes / 2**20:,.0f} MiB"
            startup = f"{r.startup_s:.1f} s" if r.startup_s is not None else ""
            out.append(f"{r.label:<44} {r.data:<30} {batch:>12} {r.ms:9.2f} {r.tokens_per_sec:11,.0f} {mfu:>6} {mem:>10} {startup:>9}")
        out.append("(start-up: the warm-up steps' time beyond steady state: compilation, autotuning, first allocations;")
        out.append(" peak mem: torch.cuda.max_memory_allocated per row" if s.device.type == "cuda" else " peak mem: the process's peak RSS so far (CPU)")
        out[-1] += ")"
        out.append("")
        out.append("ours / seed, tokens/s:")
        for ours_key, label in (("ours", f"ours at {s.busy_batch}x{s.block_size} x{s.busy_accum}"),
                                ("ours-seedbatch", f"ours at the seed's {s.seed_batch}x{s.block_size}"),
                                ("ours-big", f"ours at {s.big_batch}x{s.block_size} x{s.big_accum}")):
            parts = []
            for data in ("synthetic", "real"):
                a, b = self.rows.get(f"{ours_key}/{data}"), self.rows.get(f"seed/{data}")
                if a and b and a.tokens_per_sec and b.tokens_per_sec:
                    parts.append(f"{data} {a.tokens_per_sec / b.tokens_per_sec:.2f}x")
            if parts:
                out.append(f"  {label} vs the seed at {s.seed_batch}x{s.block_size}: " + ", ".join(parts))
        parts = []
        for data in ("synthetic", "real"):
            a, b = self.rows.get(f"ours/{data}"), self.rows.get(f"today/{data}")
            if a and b and a.tokens_per_sec and b.tokens_per_sec:
                parts.append(f"{data} {a.tokens_per_sec / b.tokens_per_sec:.2f}x")
        if parts:
            out.append(f"  ours vs the nanoGPT-today rewrite, both at {s.busy_batch}x{s.block_size} x{s.busy_accum} "
                       "(like for like but biases: ours has them, as GPT-2; its training config turns them off): " + ", ".join(parts))
        best = max((r for k, r in self.rows.items() if k.startswith("ours") and r.mfu is not None and "eager" not in r.label), key=lambda r: r.mfu, default=None)
        if best is not None and s.device.type == "cuda":
            verdict = "reaches" if best.mfu >= MFU_TARGET else "is BELOW"
            out.append(f"  best MFU of ours: {best.mfu * 100:.1f}% ({best.data}, {best.batch}x{best.block} x{best.accum}); {verdict} the {MFU_TARGET:.0%} target")
        out.append("")
        out.append("fast paths (on against off, same setting; > 1x means the fast path pays):")
        if s.dry_run:
            out.append("  (dry run: a few tiny steps each, on a CPU where TF32 does nothing: noise, not findings)")
        pairs = [
            ("flash attention (SDPA)", "eager/on", "eager/math-sdpa"),
            ("fused AdamW", "eager/on", "eager/foreach-adamw"),
            ("vocab padded to 50304 (vs 50257, same bias)", "eager/on", "eager/no-pad"),
            ("TF32 (float32 run)", "eager/fp32-tf32", "eager/fp32-no-tf32"),
            ("system.deterministic off (its cost when on)", "eager/on", "eager/deterministic"),
            ("torch.compile", "ours-seedbatch/synthetic" if s.compile else None, "eager/on"),
            ("no host sync per step", "ours/synthetic", "ours/sync-every-step"),
            ("the seed without its per-step .item()", "seed/no-sync", "seed/synthetic"),
            ("one pinned (2, B, T) buffer vs the product's", "ours/real-contiguous", "ours/real"),
            ("real-shaped batches vs synthetic (data cost)", "ours/synthetic", "ours/real"),
        ]
        for name, on, off in pairs:
            a, b = self.rows.get(on), self.rows.get(off)
            if a and b and a.ms and b.ms:
                extra = ""
                if name == "torch.compile" and a.startup_s is not None:
                    extra = f"; start-up {a.startup_s:.1f} s compiled vs {b.startup_s:.1f} s eager"
                out.append(f"  {name:<46} {a.ms:9.2f} vs {b.ms:9.2f} ms/iter: {b.ms / a.ms:5.2f}x{extra}")
            else:
                why = " (dry run: no compile)" if on is None else ""
                out.append(f"  {name:<46} not measured{why}")
        out.append("")
        if self.stall["synchronous"]:
            sync_s, bg_s = median(self.stall["synchronous"]), median(self.stall["background"] or self.stall["background-first"])
            first = self.stall["background-first"][0] if self.stall["background-first"] else float("nan")
            out.append(
                f"checkpoint stall (ours, {self.stall_bytes / 2**30:.2f} GiB of weights and AdamW moments): synchronous save "
                f"{sync_s:.3f} s; background writer {bg_s:.3f} s ({bg_s / sync_s:.3f}x; the first save {first:.3f} s, allocating its buffers)"
            )
        else:
            out.append("checkpoint stall: not measured")
        if self.pinned_bytes is not None:
            out.append(f"pinned memory the checkpoint writer keeps: {self.pinned_bytes / 2**30:.3f} GiB "
                       f"({self.pinned_bytes / max(self.stall_bytes, 1):.2f}x the state; none where the state is on the CPU)")
        if self.runner:
            r = self.runner
            out.append(f"runner loop (fsdp{' + compile' if s.compile else ''}): {r['status']} at iteration {r['iterations']} after "
                       f"{r['resumes']} resume, {r['evaluations']} evaluations with samples, {r['checkpoints']} DCP checkpoints listed, "
                       f"{r['wall_s']:.0f} s; dynamo graphs {r['graphs']}, recompile limit hit: {'YES' if r['recompile_limit_hit'] else 'no'}")
        else:
            out.append("runner loop: not measured")
        out.append(f"host syncs in the training step: {self.sync_free or 'not measured'}")
        out.append("")
        out.append("memory, planned (nanogpt.perf.memory: weights, gradients, AdamW, activations) against measured peak:")
        for key, planned in self.planned.items():
            r = self.rows.get(key)
            if r is not None and r.ms is not None:
                out.append(f"  {r.label:<46} planned {planned / 2**20:8,.0f} MiB, measured {r.peak_bytes / 2**20:8,.0f} MiB "
                           f"({r.peak_bytes / planned:.2f}x)")
        if not self.planned:
            out.append("  not measured")
        out.append("")
        out.append("sections:")
        out += [f"  {name}: {outcome}" for name, outcome in self.sections]
        return "\n".join(out)

    def _ours_flops(self) -> dict[str, int]:
        m = self.s.model
        n = sizes.params(**m, vocab_size=sizes.padded_vocab(GPT2_VOCAB, 64), bias=True)
        return {"n": n, "flops": sizes.mfu_flops_per_token(n_params=n, **m)}


def _tensors(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def fix_cublas_workspace() -> None:
    """Give cuBLAS the fixed workspace deterministic algorithms need, before any CUDA work.

    cuBLAS reads CUBLAS_WORKSPACE_CONFIG when the process makes its first handle, so setting it
    just before the deterministic row (after hundreds of matmuls) is too late: with determinism on,
    PyTorch's matmuls then raise. ":4096:8" (32 MiB) is the runner's own setting and the workspace
    NVIDIA recommends on Hopper, so the other rows run as they would without it there.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", DETERMINISTIC_WORKSPACE)


def main(argv: list[str] | None = None) -> int:
    fix_cublas_workspace()  # first of all: see its docstring
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry-run", action="store_true", help="tiny sizes, few steps, no compile, on CPU (automatic without CUDA)")
    p.add_argument("--budget", type=float, default=420.0, help="seconds for the sections; those that no longer fit are skipped (default 420: with start-up, under 8 minutes)")
    p.add_argument("--batch", type=int, default=16, help="our micro-batch for the busy-GPU rows (default 16)")
    p.add_argument("--grad-accum", type=int, default=4, help="our micro-steps per iteration for those rows (default 4)")
    p.add_argument("--json", metavar="FILE", help="also write every row as JSON here")
    p.add_argument("--compile", action="store_true", help="compile in the dry run too (slow: exercises the compiled path on a CPU)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.grad_accum < 1 or args.budget <= 0:
        p.error("--batch and --grad-accum must be at least 1, --budget above 0")
    dry = args.dry_run or not torch.cuda.is_available()
    s = Settings(dry, args)
    t_start = time.perf_counter()
    print(f"GPU check{' (CPU dry run: tiny sizes, no compile; figures are not GPU figures)' if dry else ''}, "
          f"load average {load_average():.2f} at the start", flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        check = Check(s, args.budget, Path(tmp))
        # eager sections first: they are quick and hold the only fsdp, checkpointing and stall rows, which a
        # budget spent on compiles would skip; then the runner loop (one compile, small), then the compiled rows
        eager_limit = 60.0
        check.section("checkpoint stall", check.checkpoint_stall, timeout=eager_limit, needs=0.0)
        check.section("memory: ddp and fsdp against the plan", check.memory, timeout=eager_limit, needs=0.0)
        check.section("fast paths (eager)", check.eager, timeout=90.0, needs=0.0)
        check.section("host syncs: set_sync_debug_mode('error')", check.sync_free_step, timeout=30.0, needs=0.0)
        check.section("runner loop: fsdp + compile, eval, samples, async DCP, resume", check.runner_loop, timeout=120.0, needs=0.0)
        c = 75.0 if s.compile else 60.0  # one section's limit: a compile of GPT-2 takes about a minute
        need = 50.0 if s.compile else 0.0  # what a compiled section needs left of the budget to be worth starting
        check.section(f"ours {s.busy_batch}x{s.block_size} x{s.busy_accum}", lambda: check.ours("", s.busy_batch, s.busy_accum, extras=True), timeout=c * 1.3, needs=need)
        check.section(f"nanoGPT-today rewrite {s.busy_batch}x{s.block_size} x{s.busy_accum}", lambda: check.today(s.busy_batch, s.busy_accum), timeout=c, needs=need)
        check.section(f"seed rewrite {s.seed_batch}x{s.block_size}", lambda: check.seed("", s.seed_batch), timeout=c, needs=need)
        check.section(f"ours {s.seed_batch}x{s.block_size}", lambda: check.ours("-seedbatch", s.seed_batch, 1, extras=False), timeout=c, needs=need)
        check.section(f"speedrun recipe {s.busy_batch}x{s.block_size} x{s.busy_accum}", lambda: check.speedrun(s.busy_batch, s.busy_accum), timeout=c, needs=need)
        check.section(f"llama {s.busy_batch}x{s.block_size} x{s.busy_accum}", lambda: check.llama(s.busy_batch, s.busy_accum), timeout=c, needs=need)
        check.section(f"ours {s.big_batch}x{s.block_size} x{s.big_accum}", lambda: check.ours("-big", s.big_batch, s.big_accum, extras=False), timeout=c, needs=need)
        sys.stderr.flush()
        print(check.report())
        print(f"\ntotal {time.perf_counter() - t_start:.0f} s; load average {load_average():.2f} at the end")
        if args.json:
            peaks = {name: {"tflops": p.tflops, "source": p.source} for name, p in (("bfloat16", check.peak), ("float32", check.peak_fp32))}
            Path(args.json).write_text(json.dumps({"dry_run": dry, "peaks": peaks, "rows": [r.as_dict() for r in check.rows.values()],
                                                   "sections": check.sections}, indent=2, default=str))
        measured = [r for r in check.rows.values() if r.ms is not None and math.isfinite(r.ms)]
    return 0 if measured and all("FAILED" not in o for _, o in check.sections) else 1


if __name__ == "__main__":
    sys.exit(main())
