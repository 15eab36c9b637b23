"""`nanogpt compare A B --final | --at STEP | --target L`: is B better than A, with its uncertainty.

A and B are each a configuration's runs (a run dir, a sweep dir, a folder of runs, or several of
them): replicates differing only in the seed. Given one argument, its runs must form exactly two
configurations (a sweep of two settings × N seeds), the first A. The metric is read from each run's
metrics.jsonl at one step every run logged; the difference of the means has a Welch interval and
p-value (nanogpt.runs.stats), and a verdict line says what they mean. `--target L` gives each run's
steps, tokens and seconds to first reach L, interpolated between logged evaluations, and B/A.

Runs evaluated differently (validation data, its size, eval_iters) are refused unless
`--allow-unlike`, naming what differs; other things that weaken the answer (one run a side, different
training data, different step grids) are said beside the verdict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import attrs

from nanogpt.errors import InputError
from nanogpt.runs import stats
from nanogpt.runs.compare import Group, RunRecord, collect_runs, differing_keys, group_runs, REPLICATE_KEYS
from nanogpt.runs.plot import CURVES, read_metrics, tokens_per_iter

EVAL_METRICS = tuple(tag for tag, (kind, _) in CURVES.items() if kind == "eval")
"""The metrics a verdict compares: the ones every evaluation logs (loss/val, loss/train)."""
ALIASES = {"val/loss": "loss/val", "train/loss": "loss/train", "val_loss": "loss/val", "train_loss": "loss/train"}

EVALUATION_DIFFERS = ("data.val.sha256", "data.val.tokens", "data.tokenizer", "data.vocab_size", "spec.train.eval_iters")
"""What makes two runs' validation losses measure different things: refused unless --allow-unlike."""
TRAINING_DATA_DIFFERS = ("data.train.sha256", "data.train.tokens")
"""A difference that may be the experiment itself (B trains on other data): said, not refused."""


@attrs.frozen
class Side:
    """A or B: one configuration's runs and each run's (step -> metric) and (step -> wall seconds)."""

    name: str
    group: Group
    curves: tuple[dict[int, float], ...]
    walls: tuple[dict[int, float], ...]

    @property
    def runs(self) -> tuple[RunRecord, ...]:
        return self.group.runs

    @property
    def n(self) -> int:
        return self.group.n


def verdict_command(paths: Sequence[str], *, metric: str | None, at: int | None, final: bool, target: float | None,
                    allow_unlike: bool, as_json: bool) -> int:
    tag = ALIASES.get(metric or "loss/val", metric or "loss/val")
    if tag not in EVAL_METRICS:
        raise InputError(f"--metric {metric!r}: compare's verdict reads an evaluation's metric (known: {', '.join(EVAL_METRICS)}, or val/loss)")
    a, b = sides(paths, tag)
    refusals, notes = unlike(a, b)
    if refusals and not allow_unlike:
        raise InputError(
            "A and B were evaluated differently, so their losses measure different things:\n"
            + "\n".join(f"  {r}" for r in refusals) + "\n(--allow-unlike compares them anyway, saying so)"
        )
    notes = [*(f"unlike evaluation: {r}" for r in refusals), *notes]
    result: dict[str, Any] = {"metric": tag, "a": _describe(a), "b": _describe(b)}
    if target is None or at is not None or final:
        step, how, step_notes = pick_step(a, b, at, final)
        result.update(compare_at(a, b, step, how))
        notes += step_notes
    if target is not None:
        result["target"] = to_target(a, b, target)
    if a.n < 2 or b.n < 2:
        notes.append(f"{'one run each' if a.n == b.n == 1 else 'one run on a side'}: no interval or p-value without replicates (nanogpt sweep SPEC --seeds N)")
    result["notes"] = notes
    if as_json:
        print(json.dumps(result, indent=2, allow_nan=True))
    else:
        print(format_result(result))
    return 0


# ------------------------------------------------------------------------------- the sides


def sides(paths: Sequence[str], tag: str) -> tuple[Side, Side]:
    """A and B from the arguments: two arguments of one configuration each, or one of two configurations."""
    if len(paths) == 1:
        runs = collect_runs(paths)
        groups = group_runs(runs)
        if len(groups) != 2:
            raise InputError(
                f"{paths[0]!r} holds {len(groups)} configuration{'s' if len(groups) != 1 else ''} "
                f"({_what_differs(groups)}): a verdict compares two; give A and B as two arguments"
            )
        pair = groups
    elif len(paths) == 2:
        pair = []
        for name, path in zip("AB", paths):
            runs = collect_runs([path])
            if not runs:
                raise InputError(f"{name} ({path!r}) holds no runs")
            groups = group_runs(runs)
            if len(groups) != 1:
                raise InputError(
                    f"{name} ({path!r}) holds {len(groups)} configurations, not replicates of one "
                    f"({_what_differs(groups)}): give one configuration's runs"
                )
            pair.append(groups[0])
    else:
        raise InputError(f"a verdict compares two configurations, A and B: got {len(paths)} arguments")
    built = []
    for name, group in zip("AB", pair):
        curves, walls = [], []
        for run in group.runs:
            values, wall = _eval_points(run, tag)
            if not values:
                raise InputError(f"{name}: {run.label} has no {tag} in its metrics.jsonl (a run that has not evaluated yet?)")
            curves.append(values)
            walls.append(wall)
        built.append(Side(name, group, tuple(curves), tuple(walls)))
    return built[0], built[1]


def _eval_points(run: RunRecord, tag: str) -> tuple[dict[int, float], dict[int, float]]:
    field = CURVES[tag][1]
    values, walls = {}, {}
    for r in read_metrics(run.path):
        if r.get("kind") != "eval" or not _finite(r.get(field)):
            continue
        values[r["iter"]] = float(r[field])
        if _finite(r.get("wall_seconds")):
            walls[r["iter"]] = float(r["wall_seconds"])
    return dict(sorted(values.items())), walls


def _what_differs(groups: list[Group]) -> str:
    keys = [k for k in differing_keys([g.runs[0] for g in groups]) if k not in REPLICATE_KEYS] if len(groups) > 1 else []
    return "they differ in " + ", ".join(keys[:6]) + (", ..." if len(keys) > 6 else "") if keys else "no runs"


def _describe(side: Side) -> dict[str, Any]:
    return {"runs": [r.label for r in side.runs], "seeds": side.group.seeds(), "n": side.n}


# ---------------------------------------------------------------------------- unlike runs


def unlike(a: Side, b: Side) -> tuple[list[str], list[str]]:
    """(refusals, notes): what differs between A's runs and B's that the manifests record."""
    refusals, notes = [], []
    for field in EVALUATION_DIFFERS + TRAINING_DATA_DIFFERS:
        va, vb = _field_values(a, field), _field_values(b, field)
        if va == vb and len(va) == 1:
            continue
        line = f"{field.removeprefix('spec.')}: A {_shown(va)}, B {_shown(vb)}"
        (refusals if field in EVALUATION_DIFFERS else notes).append(line)
    return refusals, notes


def _field_values(side: Side, field: str) -> list[Any]:
    values = []
    for run in side.runs:
        if field.startswith("spec."):
            value = run.spec.get(field.removeprefix("spec."))
        else:
            value: Any = run.manifest
            for part in field.split("."):
                value = value.get(part) if isinstance(value, dict) else None
        if value not in values:
            values.append(value)
    return values


def _shown(values: list[Any]) -> str:
    def one(v: Any) -> str:
        if v is None:
            return "not recorded"
        return v[:12] if isinstance(v, str) and len(v) == 64 else json.dumps(v)

    return one(values[0]) if len(values) == 1 else "mixed (" + ", ".join(map(one, values)) + ")"


# ------------------------------------------------------------------------------ one step


def pick_step(a: Side, b: Side, at: int | None, final: bool) -> tuple[int | None, str, list[str]]:
    """(step, how it was chosen, notes). None for --final: each run's last evaluation."""
    curves = [*a.curves, *b.curves]
    labels = [r.label for r in (*a.runs, *b.runs)]
    grids = {tuple(c) for c in curves}
    if at is not None:
        lacking = [f"{label} (nearest: {_neighbours(c, at)})" for label, c in zip(labels, curves) if at not in c]
        if lacking:
            raise InputError(f"--at {at}: not an evaluated step of {', '.join(lacking[:6])}{', ...' if len(lacking) > 6 else ''}")
        return at, f"step {at}", []
    if final:
        lasts = sorted({max(c) for c in curves})
        notes = [] if len(lasts) == 1 else [f"--final compares each run's last evaluation, at different steps ({', '.join(map(str, lasts))})"]
        if len(lasts) == 1:
            return lasts[0], f"step {lasts[0]}, every run's last evaluation", notes
        return None, "each run's last evaluation", notes
    common = set(curves[0]).intersection(*curves[1:])
    if not common:
        raise InputError("the runs have no evaluated step in common: compare them with --final or --target L")
    step = max(common)
    notes = []
    if len(grids) > 1:
        notes.append(f"the runs' step grids differ: compared at step {step}, the last step all {len(curves)} runs evaluated")
    last = all(max(c) == step for c in curves)
    return step, f"step {step}" + (", every run's last evaluation" if last else f", the last step every run evaluated"), notes


def _neighbours(curve: dict[int, float], step: int) -> str:
    """The evaluated steps either side of `step`: "20, 40", or one of them at an end."""
    below = [s for s in curve if s < step]
    above = [s for s in curve if s > step]
    return ", ".join(str(s) for s in ([max(below)] if below else []) + ([min(above)] if above else []))


def compare_at(a: Side, b: Side, step: int | None, how: str) -> dict[str, Any]:
    """The metric's values at `step` (None: each run's last), each side's mean ± sd, Welch, the verdict."""
    xa = [c[step] if step is not None else c[max(c)] for c in a.curves]
    xb = [c[step] if step is not None else c[max(c)] for c in b.curves]
    out: dict[str, Any] = {"at": how, "step": step, "values": {"a": xa, "b": xb},
                           "summary": {"a": _summary(xa), "b": _summary(xb)}, "difference": stats.mean(xb) - stats.mean(xa)}
    if len(xa) >= 2 and len(xb) >= 2:
        w = stats.welch(xa, xb)
        out["welch"] = {"difference": w.difference, "low": w.low, "high": w.high, "confidence": stats.CONFIDENCE,
                        "t": w.t, "df": w.df, "p": w.p}
        need = stats.n_to_detect(abs(w.difference), stats.sd(xa) or 0.0, stats.sd(xb) or 0.0)
        out["n_to_detect"] = need
        out["verdict"] = verdict_line(w, need)
    else:
        out["welch"] = None
        d = out["difference"]
        out["verdict"] = ("A and B give the same value" if d == 0 else
                          f"B is {'lower' if d < 0 else 'higher'} by {_g(abs(d))}, from n = {len(xa)} and {len(xb)}: "
                          "no interval, so no verdict")
    return out


def _summary(xs: list[float]) -> dict[str, Any]:
    return {"mean": stats.mean(xs), "sd": stats.sd(xs), "n": len(xs)}


def verdict_line(w: stats.Welch, need: int | None) -> str:
    """The issue's words: "B is lower by 0.021 ± 0.008 (95%), p = 0.002, n = 5 and 5", or "no
    difference detectable at n = 3; about n = 9 each would detect 0.005"."""
    ns = f"n = {w.n_a}" if w.n_a == w.n_b else f"n = {w.n_a} and {w.n_b}"
    if w.p < stats.ALPHA:
        word = "lower" if w.difference < 0 else "higher"
        return f"B is {word} by {_g(abs(w.difference))} ± {_g(w.half_width)} ({stats.CONFIDENCE:.0%}), p = {_p(w.p)}, n = {w.n_a} and {w.n_b}"
    if w.difference == 0 and w.se == 0:
        return f"no difference: every run gives the same value ({ns})"
    head = f"no difference detectable at {ns} (B - A = {_g(w.difference)} ± {_g(w.half_width)}, p = {_p(w.p)})"
    if need is None:
        return head + f"; no feasible number of runs would detect {_g(abs(w.difference))}"
    return head + f"; about n = {need} each would detect {_g(abs(w.difference))}"


# --------------------------------------------------------------------------- to a target


def first_reach(curve: dict[int, float], walls: dict[int, float], target: float) -> tuple[float, float | None] | None:
    """(step, wall seconds) at which the curve first reaches `target` (<=), linear between evaluations;
    None when it never does. A curve at or below the target at its first evaluation reaches it there."""
    prev: tuple[int, float] | None = None
    for step, value in curve.items():
        if value <= target:
            if prev is None or prev[1] == value:
                return float(step), walls.get(step)
            s0, v0 = prev
            frac = (v0 - target) / (v0 - value)
            reached = s0 + frac * (step - s0)
            wall = walls[s0] + frac * (walls[step] - walls[s0]) if s0 in walls and step in walls else None
            return reached, wall
        prev = (step, value)
    return None


def to_target(a: Side, b: Side, target: float) -> dict[str, Any]:
    out: dict[str, Any] = {"loss": target, "interpolated": "linearly between logged evaluations"}
    per_side: dict[str, dict[str, list[float | None]]] = {}
    for side in (a, b):
        steps, tokens, walls, never = [], [], [], []
        for run, curve, wall in zip(side.runs, side.curves, side.walls):
            hit = first_reach(curve, wall, target)
            if hit is None:
                never.append(run.label)
                continue
            per_iter = tokens_per_iter(run)
            steps.append(hit[0])
            tokens.append(hit[0] * per_iter if per_iter else None)
            walls.append(hit[1])
        per_side[side.name] = {"steps": steps, "tokens": tokens, "wall_seconds": walls}
        out[side.name.lower()] = {
            **{k: _summary([x for x in v if x is not None]) if any(x is not None for x in v) else None for k, v in per_side[side.name].items()},
            "never": never,
        }
    missing = out["a"]["never"] + out["b"]["never"]
    if missing:
        out["ratio"] = None
        out["why_no_ratio"] = f"{len(missing)} run{'s' if len(missing) != 1 else ''} never reach {_g(target)} ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''})"
        return out
    key = "tokens" if all(x is not None for x in per_side["A"]["tokens"] + per_side["B"]["tokens"]) else "steps"
    xa = [float(x) for x in per_side["A"][key] if x is not None]
    xb = [float(x) for x in per_side["B"][key] if x is not None]
    out["ratio_of"] = key
    interval = stats.ratio_interval(xa, xb)
    if interval is None:
        out["ratio"] = {"value": stats.mean(xb) / stats.mean(xa) if stats.mean(xa) > 0 else None, "low": None, "high": None}
    else:
        out["ratio"] = {"value": interval[0], "low": interval[1], "high": interval[2], "confidence": stats.CONFIDENCE}
    return out


# ------------------------------------------------------------------------------ the text


def format_result(r: dict[str, Any]) -> str:
    lines = [f"A: {_side_line(r['a'])}", f"B: {_side_line(r['b'])}"]
    if "summary" in r:
        lines.append(f"{r['metric']} at {r['at']}:")
        for name in ("a", "b"):
            s = r["summary"][name]
            spread = f" ± {s['sd']:.4f}" if s["sd"] is not None else ""
            lines.append(f"  {name.upper()}  {s['mean']:.4f}{spread}  (n = {s['n']})")
        w = r["welch"]
        if w is not None:
            lines.append(f"  B - A = {w['difference']:+.4f}, {w['confidence']:.0%} CI [{w['low']:+.4f}, {w['high']:+.4f}], "
                         f"Welch t = {w['t']:.2f}, df = {w['df']:.1f}, p = {_p(w['p'])}")
        lines.append(f"verdict: {r['verdict']}")
    if "target" in r:
        t = r["target"]
        lines.append(f"to reach {r['metric']} <= {_g(t['loss'])} (interpolated {t['interpolated']}):")
        for name in ("a", "b"):
            s = t[name]
            cells = [f"{k} {_ms(s[k], k)}" for k in ("steps", "tokens") if s[k] is not None]
            never = [f"{len(s['never'])} of {len(s['never']) + (s['steps'] or {'n': 0})['n']} runs never reach it"] if s["never"] else []
            lines.append(f"  {name.upper()}  " + ", ".join(cells + never))
        ratio = t.get("ratio")
        if ratio is None:
            lines.append(f"  B/A: none: {t['why_no_ratio']}")
        elif ratio["value"] is None:
            lines.append(f"  B/A: none: A reaches it at its first evaluation")
        elif ratio["low"] is None:
            lines.append(f"  B/A {t['ratio_of']}: {ratio['value']:.3f} (no interval without replicates)")
        else:
            lines.append(f"  B/A {t['ratio_of']}: {ratio['value']:.3f}, {ratio['confidence']:.0%} CI [{ratio['low']:.3f}, {ratio['high']:.3f}]")
        walls = [f"{name.upper()} {_ms(t[name]['wall_seconds'], 'wall_seconds')}" for name in ("a", "b") if t[name]["wall_seconds"] is not None]
        if walls:  # (last, on a line of its own: a timing of this machine, as busy as it was)
            lines.append(f"  wall seconds: {', '.join(walls)}")
    lines += [f"note: {n}" for n in r["notes"]]
    return "\n".join(lines)


def _side_line(d: dict[str, Any]) -> str:
    seeds = ",".join("-" if s is None else str(s) for s in d["seeds"])
    more = f" and {d['n'] - 1} more" if d["n"] > 1 else ""
    return f"{d['runs'][0]}{more} (n = {d['n']}, seeds {seeds})"


def _ms(s: dict[str, Any], key: str) -> str:
    fmt = ",.0f" if key == "tokens" else ",.1f"
    return format(s["mean"], fmt) + (f" ± {format(s['sd'], fmt)}" if s["sd"] is not None else "")


def _g(x: float) -> str:
    """A difference to three significant figures: 0.0213, 0.279, 1.02."""
    return f"{x:.3g}" if x != 0 else "0"


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "< 0.0001"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
