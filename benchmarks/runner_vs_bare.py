"""The runner against a bare hand-written loop: steady-state wall time per iteration, in one process.

"The runner" is the real thing: `nanogpt.training.runner.run()` on the spec as a user runs it (TensorBoard
on, metrics.jsonl, the manifest, the spec's log_interval, an evaluation and a sample at the start
and the end). Its time per iteration is read off the wall clock: the moments its "iter N:" progress
lines reach stdout, so everything a logging step does (the host sync, TensorBoard, metrics.jsonl,
the print) is inside the windows between them. The evaluations, the sample and the final
checkpoint are outside: the first line comes after iteration 0, the last before the final
evaluation. The first window is dropped (it is just iteration 0, with the first-call costs).

The bare loop is what one writes by hand, nanoGPT-style, with none of that: the same model (our
GPT, same config and initial weights), the same AdamW (same parameter groups, betas, eps; fused on
CUDA and CPU as the runner's), the same lr schedule, dtype, gradient accumulation and clipping, batches of
random windows from the same memory-mapped train.bin (a vectorised gather, the fastest
hand-written way), forward, backward, clip, step, zero_grad; no logging. It is timed over the
same windows (iteration numbers) as the runner.

Runner and bare rounds alternate (runner first in odd rounds, bare first in even ones), so load
from other processes on a shared machine hits both; the figures are medians over all windows and
the median of the per-round ratios. The target (issue 4) is runner / bare <= 1.05.

    python benchmarks/runner_vs_bare.py                          # quickstart + bigger
    python benchmarks/runner_vs_bare.py --config quickstart --rounds 8 --iters 300
    python benchmarks/runner_vs_bare.py --threads 1

Configs:
  quickstart  experiments/shakespeare_char.toml as it ships (4 x 128, block 64, batch 12, log every 50)
  bigger      the quickstart's "bigger model" line (6 x 384, block 256) at batch 4 x 2 micro-steps,
              logging every 5 iterations (about a second per iteration on a 2-core CPU)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/ itself, when run from elsewhere
from common import REPO, load_average, machine_line, median, spread

TARGET = 1.05
SPEC = REPO / "experiments" / "shakespeare_char.toml"

CONFIGS: dict[str, dict] = {
    "quickstart": {"overrides": [], "iters": 250, "rounds": 6},
    "bigger": {
        "overrides": [
            "model.n_layer=6", "model.n_head=6", "model.n_embd=384", "model.block_size=256",
            "train.batch_size=4", "train.grad_accum=2", "train.log_interval=5",
        ],
        "iters": 20,
        "rounds": 3,
    },
}

ITER_LINE = re.compile(r"iter (\d+): loss ([0-9.]+)")


class LineClock(io.TextIOBase):
    """A stdout stand-in noting the moment each "iter N:" progress line is complete."""

    def __init__(self, echo: bool):
        self.echo = echo
        self.pending = ""
        self.stamps: dict[int, float] = {}
        self.losses: dict[int, float] = {}

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        now = time.perf_counter()
        if self.echo:
            sys.__stdout__.write(text)
        self.pending += text
        while "\n" in self.pending:
            line, self.pending = self.pending.split("\n", 1)
            m = ITER_LINE.match(line)
            if m:
                self.stamps[int(m.group(1))] = now
                self.losses[int(m.group(1))] = float(m.group(2))
        return len(text)


def window_ms(stamps: dict[int, float]) -> list[float]:
    """ms/iter of each window between consecutive stamps (the window ending at the first stamp has no start: dropped)."""
    its = sorted(stamps)
    return [(stamps[b] - stamps[a]) * 1000 / (b - a) for a, b in itertools.pairwise(its)]


# ------------------------------------------------------------------------------ the runner


def runner_round(spec: Path, overrides: list[str], run_id: str, echo: bool) -> tuple[list[float], float]:
    """One `nanogpt.training.runner.run()`; (ms/iter of each steady-state window, the last logged loss)."""
    from nanogpt.config.load import load_spec
    from nanogpt.training.runner import run

    exp, origin = load_spec(spec, [*overrides, f'logging.run_id="{run_id}"'])
    clock = LineClock(echo)
    with contextlib.redirect_stdout(clock):
        status = run(exp, origin)
    if status != 0:
        sys.exit(f"the runner exited {status} (run {run_id}); see its output above (rerun with --echo)")
    return window_ms(clock.stamps), clock.losses[max(clock.losses)]


# ---------------------------------------------------------------------------- the bare loop


def bare_round(spec: Path, overrides: list[str]) -> tuple[list[float], float]:
    """The hand-written loop over the same iterations; (ms/iter of each window, the last loss)."""
    from nanogpt.data.files import open_dataset
    from nanogpt.training.dist import pick_dtype
    from nanogpt.models.gpt import GPT, GPTConfig
    from nanogpt.config.load import load_spec

    exp, _ = load_spec(spec, overrides)
    m, t, o, s, sysspec = exp.model, exp.train, exp.optimizer, exp.schedule, exp.system
    device = torch.device("cuda" if sysspec.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if sysspec.device == "auto" else sysspec.device))
    dtype = pick_dtype(sysspec.dtype, device)  # the runner's precision, "auto" resolved as it resolves it

    dataset = open_dataset(exp.data)
    data = np.memmap(dataset.path("train"), dtype=dataset.dtype, mode="r")
    window = np.arange(m.block_size + 1)

    def get_batch() -> tuple[torch.Tensor, torch.Tensor]:
        ix = torch.randint(len(data) - m.block_size, (t.batch_size,)).numpy()
        tokens = torch.from_numpy(data[ix[:, None] + window].astype(np.int64))
        x, y = tokens[:, :-1], tokens[:, 1:]
        if device.type == "cuda":
            x, y = x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
        return x, y

    torch.manual_seed(exp.seed)
    model = GPT(GPTConfig.from_spec(m, dataset.vocab_size)).to(device)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "wte" not in n and "wpe" not in n]
    ids = {id(p) for p in decay}
    no_decay = [p for p in model.parameters() if id(p) not in ids]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=o.lr, betas=tuple(o.betas), eps=o.eps, fused=(device.type in ("cuda", "cpu")) if o.fused is None else o.fused,
    )
    if sysspec.compile:
        model = torch.compile(model)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def get_lr(it: int) -> float:  # the cosine schedule: linear warmup, cosine to min_lr, flat after
        if it < s.warmup_iters:
            return o.lr * (it + 1) / (s.warmup_iters + 1)
        if it > s.decay_iters:
            return s.min_lr
        ratio = (it - s.warmup_iters) / (s.decay_iters - s.warmup_iters)
        return s.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (o.lr - s.min_lr)

    stamps = {}
    for it in range(t.max_iters):
        lr = get_lr(it) if s.kind == "cosine" else o.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        for _ in range(t.grad_accum):
            x, y = get_batch()
            with autocast:
                _, loss = model(x, y)
            (loss / t.grad_accum).backward()
        if o.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if it % t.log_interval == 0 or it == t.max_iters - 1:
            if device.type == "cuda":
                torch.cuda.synchronize()  # the runner syncs on its logging steps too (loss.item())
            stamps[it] = time.perf_counter()
    return window_ms(stamps), float(loss.item())


# ------------------------------------------------------------------------------------ main


def compare(name: str, cfg: dict, args: argparse.Namespace, work: Path) -> float:
    rounds = args.rounds or cfg["rounds"]
    iters = args.iters or cfg["iters"]
    overrides = [
        f'data.data_dir="{work / "data"}"', f'logging.out_dir="{work / "runs"}"',
        f"train.max_iters={iters}", f"train.eval_interval={iters + 1}",
        *cfg["overrides"], *args.override,
    ]
    from nanogpt.data.prepare import ensure_prepared
    from nanogpt.training.dist import pick_dtype
    from nanogpt.config.load import load_spec

    exp, _ = load_spec(SPEC, overrides, check_files=False)
    ensure_prepared(exp.data)
    m, t = exp.model, exp.train
    print(
        f"\n{name}: {m.n_layer} layers x {m.n_embd} (n_head {m.n_head}), block {m.block_size}, batch {t.batch_size} x "
        f"{t.grad_accum} micro-steps = {exp.tokens_per_iter:,} tokens/iter, dtype {exp.system.dtype} "
        f"({str(pick_dtype(exp.system.dtype, torch.device('cpu'))).removeprefix('torch.')} on a CPU), "
        f"compile {'on' if exp.system.compile else 'off'}, tensorboard {'on' if exp.logging.tensorboard else 'off'}, "
        f"log every {t.log_interval}; {iters} iterations per round, {rounds} rounds, load {load_average():.2f}"
    )
    print(f"  {'round':>5} {'first':>6} {'runner ms/iter':>15} {'bare ms/iter':>13} {'ratio':>7}   load   last loss runner / bare")
    runner_all, bare_all, ratios = [], [], []
    for r in range(rounds):
        runner_first = r % 2 == 0
        out: dict[str, tuple[list[float], float]] = {}
        for who in ("runner", "bare") if runner_first else ("bare", "runner"):
            if who == "runner":
                out[who] = runner_round(SPEC, overrides, f"{name}-{os.getpid()}-round-{r + 1}", args.echo)
            else:
                out[who] = bare_round(SPEC, overrides)
        runner_ms, bare_ms = median(out["runner"][0]), median(out["bare"][0])
        runner_all += out["runner"][0]
        bare_all += out["bare"][0]
        ratios.append(runner_ms / bare_ms)
        print(
            f"  {r + 1:>5} {'runner' if runner_first else 'bare':>6} {runner_ms:15.2f} {bare_ms:13.2f} {ratios[-1]:7.3f}"
            f"   {load_average():4.2f}   {out['runner'][1]:.4f} / {out['bare'][1]:.4f}"
        )
    runner_med, bare_med = median(runner_all), median(bare_all)
    ratio = runner_med / bare_med
    print(
        f"  median over {len(runner_all)} windows: runner {runner_med:.2f} ms/iter ({spread(runner_all)}), "
        f"bare {bare_med:.2f} ms/iter ({spread(bare_all)})"
    )
    verdict = "within" if ratio <= TARGET else "OVER"
    print(f"  runner / bare: {ratio:.3f} (median of per-round ratios {median(ratios):.3f}); {verdict} the {TARGET} target")
    return ratio


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", choices=[*CONFIGS, "all"], default="all")
    p.add_argument("--rounds", type=int, default=None, help="runner + bare rounds (default per config)")
    p.add_argument("--iters", type=int, default=None, help="iterations per round (default per config)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="extra spec override for both")
    p.add_argument("--work-dir", help="data and runs go here (default: a temporary directory, removed after)")
    p.add_argument("--echo", action="store_true", help="show the runner's own output")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"runner vs bare loop: {machine_line()}")
    names = list(CONFIGS) if args.config == "all" else [args.config]
    with contextlib.ExitStack() as stack:
        work = Path(args.work_dir) if args.work_dir else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        ratios = {name: compare(name, CONFIGS[name], args, work) for name in names}
    print("\nsummary: " + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()) + f" (target <= {TARGET}); load {load_average():.2f}")
    return 0 if all(v <= TARGET for v in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
