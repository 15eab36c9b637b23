"""`nanogpt compare`: many runs side by side, the spec keys that differ among them as columns.

A run dir, a manifest, a sweep dir (its members' runs) or a folder of runs (`<out_dir>/<name>`,
or `<out_dir>` itself) each stand for their runs. Only manifests are read (never torch, never
metrics.jsonl), so a table of thousands of runs takes a moment; a manifest that cannot be read is
named on stderr and left out.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from nanogpt.errors import InputError
from nanogpt.runs.manifest import MANIFEST, ManifestError, read_manifest
from nanogpt.config.canonical import as_read_today
from nanogpt.config.dotted import flatten
from nanogpt.runs.sweeps.record import SWEEP_JSON, SweepRecord

RESULTS = ("status", "iter", "best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds")
"""The columns after the differing spec keys, from the manifest's `status` and `metrics`."""

NOT_COMPARED = ("logging.run_id",)
"""Spec keys that differ by design and are in the `run` column already."""


@attrs.frozen
class RunRecord:
    """One run's manifest, and where it was found."""

    path: Path
    manifest: dict[str, Any] = attrs.field(eq=False)
    spec: dict[str, Any] = attrs.field(eq=False, init=False)
    """The resolved spec, flat: dotted path -> value (as today's classes read it: a field added
    since the run is its default, not a column that differs)."""

    def __attrs_post_init__(self) -> None:
        spec = as_read_today(self.manifest.get("spec"))
        object.__setattr__(self, "spec", flatten(spec) if isinstance(spec, dict) else {})

    @property
    def label(self) -> str:
        """`<name>/<run_id>`, as TensorBoard shows the run."""
        m = self.manifest
        name = m.get("name") if isinstance(m.get("name"), str) else self.path.parent.name
        run_id = m.get("run_id") if isinstance(m.get("run_id"), str) else self.path.name
        return f"{name}/{run_id}"

    def metric(self, key: str) -> Any:
        metrics = self.manifest.get("metrics")
        value = metrics.get(key) if isinstance(metrics, dict) else None
        return value if _finite(value) else None


# ------------------------------------------------------------------------------ collecting


def collect_runs(paths: Sequence[str]) -> list[RunRecord]:
    """The runs the arguments stand for, in order, each once. InputError for a path that is none of them."""
    found: list[RunRecord] = []
    seen: set[Path] = set()
    for arg in paths:
        for run_dir in _run_dirs(Path(arg)):
            key = Path(os.path.abspath(run_dir))  # (not resolve(): a syscall per part, per run)
            if key in seen:
                continue
            seen.add(key)
            try:
                found.append(RunRecord(run_dir, read_manifest(run_dir / MANIFEST)))
            except ManifestError as e:
                print(f"warning: {e}; left out", file=sys.stderr)
    return found


def _run_dirs(path: Path) -> list[Path]:
    if path.is_file():
        if path.name == MANIFEST or path.suffix == ".json" and path.name != SWEEP_JSON:
            return [path.parent]
        if path.name == SWEEP_JSON:
            return _run_dirs(path.parent)
        raise InputError(f"{str(path)!r} is not a run dir, a manifest.json, a sweep dir or a folder of runs")
    if not path.is_dir():
        raise InputError(f"{str(path)!r} does not exist")
    if (path / MANIFEST).exists():
        return [path]
    if (path / SWEEP_JSON).exists():
        record = SweepRecord(path)
        members = record.read()["members"]
        return [d for d in map(record.run_dir_of, members) if d is not None and (d / MANIFEST).exists()]
    # <out_dir>/<name>/<run_id> or <out_dir>/<name>: run dirs one or two levels down
    return sorted(
        m.parent for pattern in (f"*/{MANIFEST}", f"*/*/{MANIFEST}") for m in path.glob(pattern)
        if not any(part.startswith(".") for part in m.relative_to(path).parts)
    )


# ---------------------------------------------------------------------------------- the table


def differing_keys(runs: Sequence[RunRecord]) -> list[str]:
    """Spec keys (dotted) whose value is not the same in every run: a sweep's swept keys first, in the
    order of its axes, then the others in the order the specs list them."""
    specs = [r.spec for r in runs]
    keys: dict[str, None] = {}
    for r in runs:
        swept = r.manifest.get("sweep")
        if isinstance(swept, dict) and isinstance(swept.get("values"), dict):
            keys.update(dict.fromkeys(swept["values"]))
    for spec in specs:
        keys.update(dict.fromkeys(spec))
    return [k for k in keys if k not in NOT_COMPARED and _differs([s.get(k, _ABSENT) for s in specs])]


_ABSENT = object()
"""Stands for a key one spec lacks (another model kind): it differs from every value."""


def _differs(values: list[Any]) -> bool:
    first = values[0]
    return any(v is not first and (type(v) is not type(first) or v != first) for v in values[1:])


def compare_rows(runs: Sequence[RunRecord], sort: str = "best_val_loss", reverse: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows): `run`, the differing spec keys, then RESULTS; sorted by `sort`, missing values last."""
    keys = differing_keys(runs)
    columns = ["run", *keys, *RESULTS]
    if sort not in columns:
        raise InputError(f"--sort {sort!r}: not a column here (columns: {', '.join(columns)})")
    rows = []
    for r in runs:
        spec = r.spec
        status = r.manifest.get("status")
        row = {"run": r.label, **{k: spec.get(k) for k in keys}, "status": status if isinstance(status, str) else None}
        row.update({k: r.metric(k) for k in RESULTS[1:]})
        rows.append(row)
    present = [row for row in rows if row[sort] is not None]
    missing = [row for row in rows if row[sort] is None]
    present.sort(key=lambda row: _sort_key(row[sort]), reverse=reverse)
    return columns, present + missing


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    return (1, json.dumps(value, sort_keys=True) if not isinstance(value, str) else value)


def _finite(value: Any) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


FORMATS = {"iter": "d", "best_val_loss": ".4f", "val_loss": ".4f", "tokens_per_sec": ",.0f", "wall_seconds": ",.1f"}


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column in FORMATS and _finite(value):
        try:
            return format(value, FORMATS[column])
        except ValueError:
            return str(value)
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def format_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    table = [columns] + [[_cell(c, row[c]) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    numeric = {c for c in columns if c in FORMATS or all(_finite(row[c]) or row[c] is None for row in rows)} - {"run"}
    lines = []
    for line in table:
        cells = [cell.rjust(w) if c in numeric else cell.ljust(w) for c, cell, w in zip(columns, line, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def compare_command(paths: Sequence[str], *, fmt: str = "table", sort: str = "best_val_loss", reverse: bool = False) -> int:
    runs = collect_runs(paths)
    if not runs:
        print(f"no runs in {' '.join(paths)}", file=sys.stderr)
        return 0
    columns, rows = compare_rows(runs, sort, reverse)
    if fmt == "json":
        print(json.dumps(rows, indent=2, allow_nan=True))
    elif fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] if isinstance(row[c], (str, int, float)) else json.dumps(row[c]) for c in columns])
    else:
        print(format_table(columns, rows))
    return 0
