"""Steps, tokens and wall time to the same loss: the quickstart's AdamW recipe against the modern one
(Muon and the GPT-2 speedrun's architecture), each at its best learning rate, over several seeds.

The two recipes are the shipped specs experiments/shakespeare_char.toml (AdamW, GPT-2's blocks) and
experiments/modern_shakespeare_char.toml (Muon on the blocks' matrices, AdamW on the rest; rotary
positions, RMSNorm, qk-norm, ReLU squared, soft-capped logits, untied head, zero-init): the same
data, size, tokens per step (12 x 64) and number of steps, both in the same precision (the specs'
`system.dtype = "auto"`). Only the evaluation is made denser than the specs' (every `--eval-interval`
steps on `--eval-iters` fixed batches, the same for both) so that the step a loss is first reached
can be read off the curve.

1. Tuning, seed 1: each recipe at each of its learning rates (AdamW: `optimizer.lr`; modern: Muon's
   `optimizer.lr`, the AdamW part as the spec has it); the schedule's floor stays at a tenth of the
   peak. The best rate is the lowest final validation loss; one at the edge of its grid is said so
   (the grid did not bracket the optimum).
2. Seeds: each recipe at its best rate for seeds 1..N (seed 1's run is the tuning one), the runs of
   the two recipes alternating so that drifting load falls on both.
3. The target is the AdamW recipe's final validation loss (mean over its seeds). For each modern
   run: the first step at which its validation loss reaches the target, linearly interpolated
   between evaluations (said so), the tokens that makes, and its training wall time to that step
   (the sum of its logged windows' time: evaluation, start-up and checkpoints left out). AdamW
   reaches its own final loss at its last step by definition.
4. A step's cost: each run's median ms per iteration over its logged windows after the first
   (start-up is not training), the recipes' medians over seeds, and their ratio.

    python benchmarks/tokens_to_target.py [--seeds 3] [--iters 2000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, load_average, machine_line, median

RECIPES = {
    "adamw": ("experiments/shakespeare_char.toml", (1e-3, 2e-3, 4e-3, 8e-3)),
    "modern": ("experiments/modern_shakespeare_char.toml", (0.005, 0.01, 0.02, 0.04)),
}


class Run:
    """One finished run, read back from its metrics.jsonl."""

    def __init__(self, recipe: str, lr: float, seed: int, out: Path, wall: float):
        self.recipe, self.lr, self.seed, self.wall = recipe, lr, seed, wall
        lines = [json.loads(line) for line in next(out.rglob("metrics.jsonl")).read_text().splitlines() if line]
        self.evals = [(line["iter"], line["val_loss"]) for line in lines if line["kind"] == "eval"]
        windows = [line for line in lines if line["kind"] == "train"]
        # (last iteration of the window, seconds it took): a window logged at `iter` covers the
        # iterations since the previous one.
        self.windows, previous = [], None
        for line in windows:
            iters = 1 if previous is None else line["iter"] - previous
            self.windows.append((line["iter"], line["ms_per_iter"] * iters / 1000))
            previous = line["iter"]
        self.ms_per_iter = median([line["ms_per_iter"] for line in windows[1:]])
        self.final = self.evals[-1][1]

    def step_reaching(self, target: float) -> float | None:
        """The first step at which the validation loss is at or below `target`, interpolated linearly
        between the two evaluations around it; None if it never is."""
        for (s0, l0), (s1, l1) in zip(self.evals, self.evals[1:]):
            if l1 <= target:
                if l0 <= target:
                    return float(s0)
                return s0 + (s1 - s0) * (l0 - target) / (l0 - l1)
        return None

    def train_seconds_to(self, step: float) -> float:
        """Training time up to `step`: whole windows before it, and the share of the window it falls in."""
        seconds, start = 0.0, 0
        for end, window_seconds in self.windows:
            if end <= step:
                seconds += window_seconds
            else:
                seconds += window_seconds * max(0.0, step - start) / max(1, end - start)
                break
            start = end
        return seconds


def train(recipe: str, lr: float, seed: int, args: argparse.Namespace, work: Path) -> Run:
    spec, _ = RECIPES[recipe]
    out = work / f"{recipe}-lr{lr:g}-seed{seed}"
    overrides = [
        f"seed={seed}", f"optimizer.lr={lr}", f"schedule.min_lr={lr / 10}",
        f"train.max_iters={args.iters}", f"schedule.decay_iters={args.iters}",
        f"schedule.warmup_iters={min(100, args.iters // 10)}",  # both specs warm up for 100 of their 2,000
        f"train.eval_interval={args.eval_interval}", f"train.eval_iters={args.eval_iters}",
        f"train.log_interval={args.log_interval}", 'system.device="cpu"', "logging.tensorboard=false",
        "logging.samples=0", f'data.data_dir="{work / "data"}"', f'logging.out_dir="{out}"',
    ]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "nanogpt.run", spec, *overrides], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"{recipe} lr {lr:g} seed {seed} failed:\n{done.stderr[-3000:]}")
    run = Run(recipe, lr, seed, out, time.perf_counter() - start)
    print(f"  {recipe:<6} lr {lr:<6g} seed {seed}: final val loss {run.final:.4f}, "
          f"{run.ms_per_iter:.1f} ms/iter, {run.wall:.0f} s (load {load_average():.1f})", flush=True)
    return run


def step_flops(vocab_size: int, tokens_per_step: int) -> tuple[float, float]:
    """(the modern model's forward and backward FLOPs a step, Muon's Newton-Schulz FLOPs a step): an m x n
    matrix (m <= n) costs 2 (2 m^2 n + m^3) a Newton-Schulz iteration (X X^T, its square, then times X)."""
    from nanogpt.config.load import load_spec
    from nanogpt.registry import MODELS

    exp, _ = load_spec(REPO / RECIPES["modern"][0], check_files=False)
    model = MODELS.build(exp.model, vocab_size=vocab_size)
    roles = model.param_roles()
    newton_schulz = 0.0
    for name, p in model.named_parameters():
        if roles[name] == "hidden":
            m, n = sorted(p.shape)
            newton_schulz += exp.optimizer.ns_steps * 2 * (2 * m * m * n + m ** 3)
    return model.flops_per_token() * tokens_per_step, newton_schulz


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--iters", type=int, default=2000, help="steps of every run (the quickstart's 2000)")
    parser.add_argument("--eval-interval", type=int, default=100)
    parser.add_argument("--eval-iters", type=int, default=40)
    parser.add_argument("--log-interval", type=int, default=50)
    args = parser.parse_args()
    print(machine_line())
    tokens_per_step = 12 * 64
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"1. tuning at seed 1, {args.iters} steps of {tokens_per_step} tokens each:")
        tuning: dict[str, list[Run]] = {recipe: [] for recipe in RECIPES}
        for index in range(max(len(lrs) for _, lrs in RECIPES.values())):
            for recipe, (_, lrs) in RECIPES.items():
                if index < len(lrs):
                    tuning[recipe].append(train(recipe, lrs[index], 1, args, work))
        best: dict[str, Run] = {}
        for recipe, runs in tuning.items():
            best[recipe] = min(runs, key=lambda run: run.final)
            lrs = RECIPES[recipe][1]
            edge = " (at the edge of its grid: the optimum may lie beyond it)" if best[recipe].lr in (lrs[0], lrs[-1]) else ""
            print(f"  best {recipe}: lr {best[recipe].lr:g}{edge}")
        print(f"2. seeds 2..{args.seeds} at the best rates, alternating:")
        seeds: dict[str, list[Run]] = {recipe: [best[recipe]] for recipe in RECIPES}
        for seed in range(2, args.seeds + 1):
            order = list(RECIPES) if seed % 2 else list(RECIPES)[::-1]
            for recipe in order:
                seeds[recipe].append(train(recipe, best[recipe].lr, seed, args, work))
        vocab_size = json.loads((work / "data" / "shakespeare_char" / "meta.json").read_text())["vocab_size"]

    adamw, modern = seeds["adamw"], seeds["modern"]
    target = statistics.mean(run.final for run in adamw)
    print(f"\n3. target: the AdamW recipe's final validation loss, {target:.4f} (mean of {len(adamw)} seeds)")
    print("   steps to it are interpolated linearly between evaluations "
          f"{args.eval_interval} steps apart; training time is the logged windows' (no evaluation, no start-up)")
    adamw_seconds = statistics.mean(run.train_seconds_to(args.iters) for run in adamw)
    print(f"   adamw  (lr {best['adamw'].lr:g}): {args.iters} steps, {args.iters * tokens_per_step:,} tokens, "
          f"{adamw_seconds:.1f} s (its last step, by definition)")
    reached = []
    for run in modern:
        step = run.step_reaching(target)
        if step is None:
            print(f"   modern (lr {run.lr:g}) seed {run.seed}: not reached in {args.iters} steps (final {run.final:.4f})")
            continue
        reached.append((step, run.train_seconds_to(step)))
        print(f"   modern (lr {run.lr:g}) seed {run.seed}: {step:.0f} steps, {step * tokens_per_step:,.0f} tokens, "
              f"{reached[-1][1]:.1f} s")
    if len(reached) == len(modern):
        steps = statistics.mean(step for step, _ in reached)
        seconds = statistics.mean(s for _, s in reached)
        print(f"   modern / adamw: steps (and tokens) {steps / args.iters:.2f}x, training time {seconds / adamw_seconds:.2f}x"
              "   (target: steps <= 0.75x)")
    else:
        print(f"   modern / adamw: not every modern seed reached the target ({len(reached)} of {len(modern)})")
    print(f"\n4. final validation loss at equal steps ({args.iters}), mean ± sd over seeds:")
    for recipe, runs in seeds.items():
        print(f"   {recipe:<6} {mean_sd([run.final for run in runs])}   ({', '.join(f'{run.final:.4f}' for run in runs)})")
    step_cost = {recipe: median([run.ms_per_iter for run in runs]) for recipe, runs in seeds.items()}
    print(f"   ms per step (median over seeds of each run's median window): adamw {step_cost['adamw']:.1f}, "
          f"modern {step_cost['modern']:.1f}; modern / adamw = {step_cost['modern'] / step_cost['adamw']:.2f}x"
          "   (target: <= 1.3x)")
    model_flops, newton_schulz = step_flops(vocab_size, tokens_per_step)
    print(f"   why: Muon's Newton-Schulz is {newton_schulz / 1e9:.2f} GFLOP a step whatever the batch, "
          f"{newton_schulz / model_flops:.2f}x the model's forward and backward at {tokens_per_step} tokens a step "
          f"({model_flops / 1e9:.2f} GFLOP); for this model at the speedrun's 524,288 tokens a step it would be "
          f"{newton_schulz / (model_flops / tokens_per_step * 524288):.4f}x")
    print(machine_line())


if __name__ == "__main__":
    main()
