"""`nanogpt ladder`: compute-matched rungs of one spec at several sizes, and L(C) fitted to their losses.

`ladder SPEC --sizes n_layer=2,4,6 [--tokens-per-param 20] [key=value ...]` plans a rung per size:
the spec with `model.<key>` set, trained on tokens-per-param × its parameters (Chinchilla's 20 by
default), so each rung's compute C = FLOPs per token × tokens follows from its size (the FLOPs are
`scaling`'s). It prints each rung's parameters, tokens, iterations and FLOPs, and the `nanogpt run`
command that trains it. `ladder --fit RUN_OR_DIR ...` reads the runs' manifests (replicates are
averaged), computes each one's C the same way, and fits L(C) = E + A·C^-alpha (nanogpt.perf.laws);
`--baseline RUN_OR_DIR ...` fits a second ladder and gives, at each rung, the compute multiplier:
how much more compute the baseline needs to reach the ladder's loss.
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Sequence
from typing import Any

import attrs

from nanogpt.errors import InputError
from nanogpt.perf.laws import ComputeFit, fit_compute_law

CHINCHILLA_TOKENS_PER_PARAM = 20.0


@attrs.frozen
class Rung:
    value: Any
    """The size key's value at this rung."""
    params: int
    """Parameters, as Chinchilla counts them (scaling's N)."""
    flops_per_token: float
    tokens_per_iter: int
    iters: int
    words: tuple[str, ...]
    """The override words that make this rung from the spec."""

    @property
    def tokens(self) -> int:
        return self.iters * self.tokens_per_iter

    @property
    def compute(self) -> float:
        return self.flops_per_token * self.tokens


def parse_sizes(text: str) -> tuple[str, list[Any]]:
    """`n_layer=2,4,6` (or `model.n_layer=...`) -> ("model.n_layer", [2, 4, 6])."""
    from nanogpt.config.sweep import axis_of

    key = text.partition("=")[0].strip()
    axis = axis_of(text) if "=" in text else None
    if not key or axis is None:
        raise InputError(f"--sizes {text!r}: give a model key and two or more values, such as n_layer=2,4,6")
    return (key if key.startswith("model.") else f"model.{key}"), list(axis.values)


def size_of(exp: Any, path: str) -> tuple[int, float]:
    """(params N, training FLOPs per token) of a spec's model, as `nanogpt scaling` counts them."""
    from nanogpt.perf.scaling import _arch_of, _model_report

    report = _model_report(_arch_of(exp, path), None)
    return int(report["params"]), float(report["flops_per_token_chinchilla"])


def plan(spec: str, overrides: Sequence[str], sizes: str, tokens_per_param: float) -> list[Rung]:
    from nanogpt.config.load import load_spec

    if not tokens_per_param > 0:
        raise InputError(f"--tokens-per-param must be above 0 (got {tokens_per_param})")
    key, values = parse_sizes(sizes)
    rungs = []
    for value in values:
        words = (*overrides, f"{key}={json.dumps(value)}")
        exp, _ = load_spec(spec, list(words), check_files=False)
        n, per_token = size_of(exp, spec)
        iters = max(1, math.ceil(tokens_per_param * n / exp.tokens_per_iter))
        # a schedule that decays over a fixed number of steps decays over each rung's own instead
        decay = (f"schedule.decay_iters={iters}",) if getattr(exp.schedule, "decay_iters", None) is not None else ()
        rungs.append(Rung(value, n, per_token, exp.tokens_per_iter, iters, (*words, f"train.max_iters={iters}", *decay)))
    return rungs


def plan_text(spec: str, key: str, rungs: list[Rung], tokens_per_param: float) -> str:
    rows = [("rung", key, "params", "tokens", "iters", "FLOPs")] + [
        (str(i), json.dumps(r.value), f"{r.params:,}", f"{r.tokens:,}", f"{r.iters:,}", f"{r.compute:.3g}") for i, r in enumerate(rungs)
    ]
    widths = [max(len(row[k]) for row in rows) for k in range(len(rows[0]))]
    lines = [f"{spec}: {len(rungs)} rungs, {tokens_per_param:g} tokens per parameter"]
    lines += ["  ".join(c.ljust(w) if k < 2 else c.rjust(w) for k, (c, w) in enumerate(zip(row, widths))).rstrip() for row in rows]
    lines.append("run each rung (replicates: the same command with seed=S added):")
    lines += [f"  nanogpt run {shlex.join([spec, *r.words])}" for r in rungs]
    lines.append("then: nanogpt ladder --fit <the rungs' run dirs or their folder>")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- the fit


def ladder_points(paths: Sequence[str]) -> list[tuple[float, float, int]]:
    """(compute, mean final val loss, n) per configuration among the runs, in order of compute."""
    from nanogpt.runs.compare import collect_runs, group_runs
    from nanogpt.runs.stats import mean

    runs = collect_runs(paths)
    points = []
    for group in group_runs(runs):
        first = group.runs[0]
        computes, losses = [], []
        for run in group.runs:
            loss, iters = run.metric("val_loss"), run.metric("iter")
            if loss is None or iters is None:
                continue
            _, per_token = _size_of_manifest(run)
            tokens_per_iter = int(first.spec["train.batch_size"]) * int(first.spec["train.grad_accum"]) * int(first.spec["model.block_size"])
            computes.append(per_token * iters * tokens_per_iter)
            losses.append(loss)
        if losses:
            points.append((mean(computes), mean(losses), len(losses)))
    return sorted(points)


def _size_of_manifest(run: Any) -> tuple[int, float]:
    from nanogpt.config.canonical import as_read_today
    from nanogpt.config.convert import structure

    spec = as_read_today(run.manifest.get("spec"))
    if not isinstance(spec, dict) or not isinstance(spec.get("model"), dict):
        raise InputError(f"{run.path}: its manifest has no spec to size the model from")
    vocab = (run.manifest.get("data") or {}).get("vocab_size")
    if isinstance(vocab, int) and spec["model"].get("vocab_size") is None:
        spec["model"]["vocab_size"] = vocab  # (what the run's dataset gave it)
    exp, problems = structure(spec)
    if exp is None:
        raise InputError(f"{run.path}: its manifest's spec does not read today: {problems[0].line() if problems else '?'}")
    return size_of(exp, str(run.path))


def fit_text(label: str, points: list[tuple[float, float, int]]) -> tuple[str, ComputeFit]:
    if len(points) < 3:
        raise InputError(f"{label}: a fit of L(C) needs three rungs with a final val loss (got {len(points)})")
    fit = fit_compute_law([p[0] for p in points], [p[1] for p in points])
    lines = [f"{label}: L(C) = {fit.E:.4f} + {fit.A:.4g}·C^-{fit.alpha:.4f} (alpha ± {fit.se_alpha:.2g}; "
             f"rms error {fit.rms_log_error:.2g} in log(L - E))"]
    lines += [f"  C {c:.3g}  loss {loss:.4f} (n = {n})  fit {fit.loss(c):.4f}" for c, loss, n in points]
    return "\n".join(lines), fit


def ladder_command(args: Any) -> int:
    if args.fit:
        text, fit = fit_text("ladder", ladder_points(args.fit))
        print(text)
        if args.baseline:
            base_text, base = fit_text("baseline", ladder_points(args.baseline))
            print(base_text)
            print("compute multiplier (the baseline's compute for the ladder's loss, over the ladder's):")
            for c, _, _ in ladder_points(args.fit):
                print(f"  C {c:.3g}: {base.compute_for(fit.loss(c)) / c:.3g}x")
        return 0
    from nanogpt.argv import split_overrides

    paths, overrides = split_overrides(args.words, getattr(args, "specs", None) or [])
    if len(paths) != 1 or not args.sizes:
        raise InputError("usage error: ladder SPEC --sizes KEY=v1,v2,... [key=value ...], or ladder --fit RUNS ...")
    rungs = plan(paths[0], overrides, args.sizes, args.tokens_per_param)
    print(plan_text(paths[0], parse_sizes(args.sizes)[0], rungs, args.tokens_per_param))
    return 0
