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
from nanogpt.config.dotted import INERT_FIELDS, flatten, under
from nanogpt.runs.sweeps.record import SWEEP_JSON, SweepRecord

RESULTS = ("status", "iter", "best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds")
"""The columns after the differing spec keys, from the manifest's `status` and `metrics`."""

NOT_COMPARED = ("logging.run_id",)
"""Spec keys that differ by design and are in the `run` column already."""

REPLICATE_KEYS = ("seed",)
"""Spec keys whose values make replicates, not configurations: runs that differ only in these (and in
fields that cannot change results) are one configuration, measured several times."""


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


# ------------------------------------------------------------------------------- replicates


@attrs.frozen
class Group:
    """Runs of one configuration: the same resolved spec up to the seed (and fields that cannot change results)."""

    runs: tuple[RunRecord, ...]

    @property
    def n(self) -> int:
        return len(self.runs)

    @property
    def label(self) -> str:
        return self.runs[0].label if self.n == 1 else f"{self.runs[0].label} +{self.n - 1}"

    def seeds(self) -> list[Any]:
        return [r.spec.get("seed") for r in self.runs]

    def values(self, key: str) -> list[float]:
        """The finite values of a manifest metric over the group's runs."""
        return [v for v in (r.metric(key) for r in self.runs) if v is not None]


def configuration_key(run: RunRecord) -> str:
    """What replicates share: the flat spec without the seed and the fields that cannot change results."""
    kept = {k: v for k, v in run.spec.items() if k not in REPLICATE_KEYS and not under(k, INERT_FIELDS)}
    return json.dumps(kept, sort_keys=True, default=str)


def group_runs(runs: Sequence[RunRecord]) -> list[Group]:
    """Runs grouped into configurations, in the order each configuration first appears."""
    groups: dict[str, list[RunRecord]] = {}
    for r in runs:
        groups.setdefault(configuration_key(r), []).append(r)
    return [Group(tuple(g)) for g in groups.values()]


GROUP_RESULTS = ("best_val_loss", "val_loss", "tokens_per_sec", "wall_seconds")
"""The metrics a table of groups shows as mean ± sd."""


def group_rows(runs: Sequence[RunRecord], sort: str = "best_val_loss", reverse: bool = False) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, rows), one row per configuration: `group`, the keys that differ among the groups, `n`,
    `seeds`, then each of GROUP_RESULTS as {"mean", "sd", "n"} (sd None below two values)."""
    from nanogpt.runs.stats import mean, sd

    groups = group_runs(runs)
    keys = [k for k in differing_keys(runs) if k not in REPLICATE_KEYS]
    keys = [k for k in keys if _differs([g.runs[0].spec.get(k, _ABSENT) for g in groups])]
    columns = ["group", *keys, "n", "seeds", *GROUP_RESULTS]
    if sort not in columns:
        raise InputError(f"--sort {sort!r}: not a column of the groups here (columns: {', '.join(columns)})")
    rows = []
    for g in groups:
        row: dict[str, Any] = {"group": g.label, **{k: g.runs[0].spec.get(k) for k in keys}, "n": g.n, "seeds": g.seeds()}
        for metric in GROUP_RESULTS:
            xs = g.values(metric)
            row[metric] = {"mean": mean(xs), "sd": sd(xs), "n": len(xs)} if xs else None
        row["runs"] = [r.label for r in g.runs]
        rows.append(row)

    def key(row: dict[str, Any]) -> Any:
        value = row[sort]
        return value["mean"] if isinstance(value, dict) else value

    present = [row for row in rows if key(row) is not None]
    present.sort(key=lambda row: _sort_key(key(row)), reverse=reverse)
    return columns, present + [row for row in rows if key(row) is None]


def _mean_sd_cell(column: str, value: Any) -> str:
    if not isinstance(value, dict):
        return _cell(column, value)
    shown = _cell(column, value["mean"])
    return f"{shown} ± {_cell(column, value['sd'])}" if value["sd"] is not None else f"{shown} (n={value['n']})"


def format_group_table(columns: list[str], rows: list[dict[str, Any]]) -> str:
    """The groups' table; a group of fewer than two runs is marked `*` and explained below it."""
    def cell(c: str, row: dict[str, Any]) -> str:
        if c == "group":
            return row["group"] + (" *" if row["n"] < 2 else "")
        if c == "seeds":
            return ",".join("-" if s is None else str(s) for s in row["seeds"])
        return _mean_sd_cell(c, row[c])

    table = [columns] + [[cell(c, row) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    left = {"group", "seeds"} | {c for c in columns if rows and all(isinstance(row[c], str) for row in rows)}
    lines = ["  ".join(x.ljust(w) if c in left else x.rjust(w) for c, x, w in zip(columns, line, widths)).rstrip() for line in table]
    if any(row["n"] < 2 for row in rows):
        lines.append("* one run: no spread, and no verdict against it (replicates: nanogpt sweep SPEC --seeds N)")
    return "\n".join(lines)


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


def compare_command(paths: Sequence[str], *, fmt: str = "table", sort: str = "best_val_loss", reverse: bool = False,
                    each_run: bool = False) -> int:
    runs = collect_runs(paths)
    if not runs:
        print(f"no runs in {' '.join(paths)}", file=sys.stderr)
        return 0
    groups = group_runs(runs)
    if not each_run and len(groups) < len(runs):  # some configuration ran more than once: replicates
        columns, rows = group_rows(runs, sort, reverse)
        if fmt == "json":
            print(json.dumps(rows, indent=2, allow_nan=True))
        elif fmt == "csv":
            _group_csv(columns, rows)
        else:
            print(format_group_table(columns, rows))
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


def _group_csv(columns: list[str], rows: list[dict[str, Any]]) -> None:
    """One column per scalar: a metric's mean and sd as `<metric>_mean`, `<metric>_sd`."""
    flat = [c for c in columns if c not in GROUP_RESULTS] + [f"{m}_{s}" for m in GROUP_RESULTS for s in ("mean", "sd")]
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(flat)
    for row in rows:
        out = []
        for c in flat:
            metric, _, stat = c.rpartition("_")
            value = (row[metric] or {}).get(stat) if metric in GROUP_RESULTS else row[c]
            out.append("" if value is None else value if isinstance(value, (str, int, float)) else json.dumps(value))
        writer.writerow(out)
