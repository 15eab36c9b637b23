"""`nanogpt bench SPEC`: time the real training step of a spec.

The step timed is the runner's own (`TrainStep`: batches, autocast, gradient accumulation,
clipping, the optimizer), after untimed warm-up steps that absorb compilation. It reports
ms/iter, tokens/s, MFU against the device's peak (see nanogpt/training/hardware.py) and peak memory, and
can write a torch.profiler trace that TensorBoard's profiler plugin and Perfetto read.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from nanogpt.training.dist import DistEnv
from nanogpt.fileio import make_dirs
from nanogpt.training.hardware import mfu, peak_for
from nanogpt.training.parallel import build_model
from nanogpt.registry import DATA, OPTIMIZERS, SCHEDULES
from nanogpt.config.tables import Experiment
from nanogpt.config.load import load_spec


class SyntheticBatches:
    """Random token windows made once on the device: the step without any data loading (as the seed's bench.py)."""

    dataset = None

    def __init__(self, *, vocab_size: int, batch_size: int, block_size: int, env: DistEnv, seed: int):
        g = torch.Generator().manual_seed(seed)
        tokens = torch.randint(vocab_size, (batch_size, block_size + 1), generator=g)
        self.x, self.y = tokens[:, :-1].to(env.device), tokens[:, 1:].to(env.device)
        self.vocab_size = vocab_size
        self.env = env

    def micro_steps(self, grad_accum: int) -> range:
        per_rank = grad_accum // self.env.world_size
        return range(self.env.rank * per_rank, (self.env.rank + 1) * per_rank)

    def train_batches(self, iteration: int, grad_accum: int):
        for _ in self.micro_steps(grad_accum):
            yield self.x, self.y

    def eval_keys(self, split: str, eval_iters: int) -> list[tuple[int, ...]]:
        return [(k,) for k in range(eval_iters) if k % self.env.world_size == self.env.rank]

    def batch(self, split: str, key: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x, self.y

    def to_device(self, xy: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return xy


def synthetic_vocab_size(exp: Experiment) -> int:
    """The vocabulary for random tokens: the model's, else the prepared dataset's, else GPT-2's."""
    vocab = getattr(exp.model, "vocab_size", None)
    if vocab:
        return vocab
    from nanogpt.data.files import prepared_vocab_size

    return prepared_vocab_size(exp.data) or 50257


def benchmark(exp: Experiment, *, steps: int, warmup: int, synthetic: bool, profile: str | None = None) -> dict[str, Any]:
    """Time `steps` training steps after `warmup` untimed ones; returns the figures."""
    from nanogpt.training.runner import configure_backends
    from nanogpt.training.step import TrainStep

    env = DistEnv.from_env(exp.system)
    configure_backends(exp, env)
    torch.manual_seed(exp.seed)
    block_size = exp.model.block_size
    if synthetic:
        data: Any = SyntheticBatches(
            vocab_size=synthetic_vocab_size(exp), batch_size=exp.train.batch_size, block_size=block_size, env=env, seed=exp.seed
        )
    else:
        data = DATA.build(exp.data, env=env, seed=exp.seed, batch_size=exp.train.batch_size, block_size=block_size)
    model = build_model(exp, env, data.vocab_size)
    optimizer = OPTIMIZERS.build(exp.optimizer, model=model)
    lr_at = SCHEDULES.build(exp.schedule, lr=exp.optimizer.lr)
    step = TrainStep(exp, env, data, model, optimizer, lr_at)
    if env.device_type == "cuda":
        torch.cuda.reset_peak_memory_stats(env.device)

    def sync() -> None:
        if env.device_type == "cuda":
            torch.cuda.synchronize(env.device)

    t0 = time.perf_counter()
    for it in range(warmup):
        step(it)
    sync()
    warmup_seconds = time.perf_counter() - t0

    times = []
    losses = None
    tracing = _profiler(profile, env, steps) if profile else None
    if tracing is not None:
        tracing.__enter__()
    for it in range(warmup, warmup + steps):
        t = time.perf_counter()
        losses, _, _ = step(it)
        sync()  # one sync per step: honest per-step times (the runner itself syncs only when logging)
        times.append(time.perf_counter() - t)
        if tracing is not None:
            tracing.step()
    if tracing is not None:
        tracing.__exit__(None, None, None)
    last_loss = float(losses.item()) / exp.train.grad_accum if losses is not None else float("nan")

    tokens_per_iter = exp.tokens_per_iter
    ms = statistics.median(times) * 1000
    tokens_per_sec = tokens_per_iter / (ms / 1000)
    peak = peak_for(env.device, env.dtype, exp.system.peak_tflops)
    util = mfu(model.flops_per_token(), tokens_per_sec, peak, env.world_size)
    result = {
        "spec": exp.name,
        "device": str(env.device),
        "dtype": str(env.dtype).removeprefix("torch."),
        "compile": exp.system.compile,
        "synthetic": synthetic,
        "world_size": env.world_size,
        "params": model.num_params(),
        "tokens_per_iter": tokens_per_iter,
        "warmup_steps": warmup,
        "warmup_seconds": warmup_seconds,
        "steps": steps,
        "ms_per_iter": ms,
        "ms_per_iter_min": min(times) * 1000,
        "tokens_per_sec": tokens_per_sec,
        "mfu": util,
        "peak_tflops": peak.tflops,
        "peak_tflops_source": peak.source,
        "peak_measurement": peak.measurement,
        "peak_memory_bytes": _peak_memory(env),
        "last_loss": last_loss,
        "profile": profile,
    }
    env.close()
    return result


def _peak_memory(env: DistEnv) -> int:
    if env.device_type == "cuda":
        return int(torch.cuda.max_memory_allocated(env.device))
    # the process's peak resident set (kB on Linux): what a CPU run costs in memory
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def _profiler(directory: str, env: DistEnv, steps: int):
    activities = [torch.profiler.ProfilerActivity.CPU]
    if env.device_type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(
        activities=activities,
        # the trace is written once the active steps end, so they must fit in the timed steps
        schedule=torch.profiler.schedule(wait=0, warmup=1 if steps > 1 else 0, active=max(1, min(3, steps - 1)), repeat=1),
        on_trace_ready=torch.profiler.tensorboard_trace_handler(directory),
        record_shapes=True,
        profile_memory=True,
        with_flops=True,
    )


def format_result(r: dict[str, Any]) -> str:
    mfu_text = f"{r['mfu'] * 100:.1f}% of {r['peak_tflops']:.1f} TFLOP/s ({r['peak_tflops_source']})" if r["mfu"] is not None else f"n/a ({r['peak_tflops_source']})"
    lines = [
        f"bench {r['spec']}: {r['params'] / 1e6:.2f}M params, {r['tokens_per_iter']:,} tokens/iter, "
        f"{r['device']} {r['dtype']}, compile {'on' if r['compile'] else 'off'}, "
        f"{'synthetic' if r['synthetic'] else 'dataset'} batches, {r['world_size']} process(es)",
        f"  warm-up:   {r['warmup_steps']} steps in {r['warmup_seconds']:.1f} s",
        f"  ms/iter:   {r['ms_per_iter']:.2f} (median of {r['steps']}; best {r['ms_per_iter_min']:.2f})",
        f"  tokens/s:  {r['tokens_per_sec']:,.0f}",
        f"  MFU:       {mfu_text}",
        f"  peak mem:  {r['peak_memory_bytes'] / 2**20:,.0f} MiB",
    ]
    if r["profile"]:
        lines.append(f"  profile:   {r['profile']} (tensorboard --logdir {r['profile']}, or open the .pt.trace.json in Perfetto)")
    return "\n".join(lines)


def bench_command(spec_path: str, overrides: list[str], args: argparse.Namespace) -> int:
    from nanogpt.errors import InputError

    if args.steps < 1 or args.warmup < 0:
        raise InputError(f"--steps must be at least 1 and --warmup at least 0 (got --steps {args.steps}, --warmup {args.warmup})")
    exp, _ = load_spec(spec_path, overrides, check_files=not args.synthetic)
    if args.profile:  # before the steps: the trace is written only after them
        make_dirs(Path(args.profile), f"--profile {args.profile!r}")
    result = benchmark(exp, steps=args.steps, warmup=args.warmup, synthetic=args.synthetic, profile=args.profile)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    sys.stdout.flush()
    return 0
