"""`nanogpt plot`: runs' curves from their metrics.jsonl overlaid, one line per run, to PNG, SVG or PDF.

Each metric gets its own panel; a run keeps its colour in every panel, and is labelled by the
spec values that differ among the runs (what a sweep swept). Drawn with matplotlib's Agg canvas
(no display needed); the file type follows the extension, and the file is written whole or not at all.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanogpt.runs.compare import RunRecord, collect_runs, differing_keys
from nanogpt.errors import InputError
from nanogpt.fileio import atomic_open
from nanogpt.runs.manifest import METRICS

CURVES = {
    # TensorBoard tag: (kind of metrics.jsonl line, its field)
    "loss/val": ("eval", "val_loss"),
    "loss/train": ("eval", "train_loss"),
    "loss/train_step": ("train", "loss"),
    "lr": ("train", "lr"),
    "grad_norm": ("train", "grad_norm"),
    "tokens_per_sec": ("train", "tokens_per_sec"),
    "mfu": ("train", "mfu"),
}
DEFAULT_CURVES = ("loss/val", "loss/train")
X_AXES = {"iter": "iteration", "tokens": "tokens seen", "wall": "wall time (s)"}
FILE_TYPES = (".png", ".svg", ".pdf")
MAX_LEGEND = 24


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records; a line cut short by a kill is skipped."""
    records = []
    try:
        text = (run_dir / METRICS).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return []
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iter"), int):
            records.append(record)
    return records


TASK_METRICS = ("acc", "acc_norm")


def curve_source(tag: str) -> tuple[str, str] | None:
    """(kind of metrics.jsonl line, its field) of a curve: a tag of CURVES, or an [evaluation] task's
    figure as eval/<task>/<metric> or <task>/<metric> (hellaswag/acc_norm); None for anything else."""
    if tag in CURVES:
        return CURVES[tag]
    task, _, metric = tag.removeprefix("eval/").rpartition("/")
    if task and "/" not in task and metric in TASK_METRICS:
        return "tasks", f"eval/{task}/{metric}"
    return None


def curve(records: list[dict[str, Any]], tag: str, x: str, tokens_per_iter: int | None) -> tuple[list[float], list[float]]:
    """The (xs, ys) of one metric of one run, in order of x."""
    kind, field = curve_source(tag)  # type: ignore[misc]  # plot_command checked the tag
    points = []
    for r in records:
        y = r.get(field)
        if r.get("kind") != kind or not _finite(y):
            continue
        if x == "iter":
            xv = r["iter"]
        elif x == "tokens":
            xv = r["iter"] * tokens_per_iter if tokens_per_iter else None
        else:
            xv = r.get("wall_seconds")
        if _finite(xv):
            points.append((xv, y))
    points.sort(key=lambda p: p[0])
    return [p[0] for p in points], [p[1] for p in points]


def tokens_per_iter(run: RunRecord) -> int | None:
    spec = run.spec
    try:
        return int(spec["train.batch_size"]) * int(spec["train.grad_accum"]) * int(spec["model.block_size"])
    except (KeyError, TypeError, ValueError):
        return None


def labels(runs: Sequence[RunRecord]) -> list[str]:
    """Each run's legend entry: the spec values that differ among the runs, else its name/run_id.

    Where a table's `kind` differs (a gpt beside a llama) the kind tells the runs apart, and the
    table's other fields are each kind's own, so only the kind is shown; the free-text description
    is shown only when nothing else differs."""
    keys = differing_keys(runs) if len(runs) > 1 else []
    other_kinds = {k.rpartition(".")[0] for k in keys if k.endswith(".kind")}
    keys = [k for k in keys if k.endswith(".kind") or k.rpartition(".")[0] not in other_kinds]
    if len(keys) > 1:
        keys = [k for k in keys if k != "description"]
    if not keys:
        return [r.label for r in runs]
    out = []
    for r in runs:
        spec = r.spec
        out.append(" ".join(f"{k}={_short(spec.get(k))}" for k in keys))
    return out


def _short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def plot_command(paths: Sequence[str], *, output: str, metrics: Sequence[str] | None, x: str) -> int:
    out = Path(output)
    if out.suffix.lower() not in FILE_TYPES:
        raise InputError(f"-o {output!r}: the file type follows the extension, one of {', '.join(FILE_TYPES)}")
    tags = list(metrics or DEFAULT_CURVES)
    for tag in tags:
        if curve_source(tag) is None:
            raise InputError(f"--metric {tag!r}: not a curve metrics.jsonl has (known: {', '.join(CURVES)}, "
                             f"and an [evaluation] task's as TASK/acc or TASK/acc_norm)")
    runs = collect_runs(paths)
    series = []
    for run, label in zip(runs, labels(runs)):
        records = read_metrics(run.path)
        per_tag = {tag: curve(records, tag, x, tokens_per_iter(run)) for tag in tags}
        if not any(xs for xs, _ in per_tag.values()):
            why = "no wall_seconds in its metrics.jsonl (an older run)" if x == "wall" and records else "no metrics to draw"
            print(f"warning: {run.path}: {why}; left out", file=sys.stderr)
            continue
        series.append((label, per_tag))
    if not series:
        raise InputError(f"nothing to plot: no run in {' '.join(paths)} has {' or '.join(tags)} metrics")
    figure = draw(series, tags, x)
    with atomic_open(out, "wb") as f:
        figure.savefig(f, format=out.suffix.lower().lstrip("."))
    print(out)
    return 0


def draw(series: list[tuple[str, dict[str, tuple[list[float], list[float]]]]], tags: list[str], x: str) -> Any:
    """One panel per metric, one line per run (the same colour in every panel), the legend below."""
    from matplotlib.figure import Figure  # without pyplot: no display, no global state

    cols = min(len(tags), 3)
    rows = -(-len(tags) // cols)
    figure = Figure(figsize=(4.6 * cols, 3.4 * rows + 0.25 * min(len(series), MAX_LEGEND) / max(1, min(cols, 2))), layout="constrained")
    axes = figure.subplots(rows, cols, squeeze=False).flatten()
    colours = _colours(len(series))
    for ax, tag in zip(axes, tags):
        for (label, per_tag), colour in zip(series, colours):
            xs, ys = per_tag[tag]
            if xs:
                ax.plot(xs, ys, color=colour, linewidth=1.4, marker="o" if len(xs) < 30 else None, markersize=2.5, label=label)
        _frame_the_training(ax, [per_tag[tag][1] for _, per_tag in series])
        ax.set_title(tag)
        ax.set_xlabel(X_AXES[x])
        ax.grid(True, alpha=0.3)
    for ax in axes[len(tags):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    if len(handles) > MAX_LEGEND:
        handles, names = handles[:MAX_LEGEND], names[:MAX_LEGEND]
        names[-1] = f"... ({len(series) - MAX_LEGEND + 1} more)"
    figure.legend(handles, names, loc="outside lower center", ncols=max(1, min(cols, 2)), fontsize="small", frameon=False)
    return figure


def _frame_the_training(ax: Any, curves: list[list[float]]) -> None:
    """Leave the untrained model's first point above the frame when it would squash the rest.

    A loss starts at ln(vocab) and falls fast; the differences a sweep is about are in what
    follows. When the first points lie further above the rest than the rest spans, the frame fits
    the rest (the lines still run up out of it).
    """
    rest = [y for ys in curves for y in ys[1:]]
    firsts = [ys[0] for ys in curves if len(ys) > 2]
    if not rest or not firsts:
        return
    low, high = min(rest), max(rest)
    span = high - low
    if span > 0 and max(firsts) - high > span:
        ax.set_ylim(low - 0.05 * span, high + 0.15 * span)


def _colours(n: int) -> list[Any]:
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]
