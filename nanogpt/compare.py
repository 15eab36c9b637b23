"""Comparing runs: `nanogpt diff A B` and the `nanogpt runs` table.

Both read manifests only (never torch), tolerate truncated or foreign files with a clear message,
and never write anything.
"""

from __future__ import annotations

import datetime
import json
import math
import sys
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError
from nanogpt.manifest import MANIFEST, ManifestError, read_manifest
from nanogpt.spec import load_spec, resolved
from nanogpt.spec.diff import INERT_FIELDS, MISSING, diff_data, under

# Sections of a manifest in the order diff reports them, each under its group name.
GROUPS = (
    ("spec", ("spec",)),
    ("model", ("model",)),
    ("data", ("data",)),
    ("environment", ("git", "env", "hardware", "launcher")),
    ("metrics", ("status", "error", "metrics")),
    ("run", ("name", "run_id", "created_at", "finished_at", "command", "overrides", "spec_files", "provenance",
             "spec_sha256", "checkpoints", "resumes", "extends")),
)

VOLATILE = (
    "name", "run_id", "created_at", "finished_at", "command", "overrides", "spec_files", "provenance",
    "spec_sha256", "checkpoints", "resumes", "metrics.wall_seconds", "metrics.tokens_per_sec",
    "metrics.mfu", "launcher", "hardware.peak_tflops", "extends",
)
"""Paths that differ between any two runs, hidden unless --all."""



def load_side(path: str) -> tuple[str, dict[str, Any]]:
    """("run"|"spec", record) for a run dir, a manifest file or a spec file."""
    p = Path(path)
    if p.is_dir():
        if not (p / MANIFEST).exists():
            raise InputError(f"{path!r} is a directory without a {MANIFEST} (not a run directory)")
        return "run", read_manifest(p / MANIFEST)
    if p.suffix == ".toml":
        exp, _ = load_spec(p, check_files=False)
        return "spec", {"spec": resolved(exp)}
    if p.suffix == ".json" or p.name == MANIFEST:
        return "run", read_manifest(p)
    if not p.exists():
        raise InputError(f"{path!r} does not exist")
    raise InputError(f"{path!r} is neither a run directory, a manifest.json nor a .toml spec")


def diff_records(
    a: dict[str, Any], b: dict[str, Any], *, spec_only: bool, show_all: bool, results_only: bool = False
) -> list[dict[str, Any]]:
    """Every differing path, grouped and ordered (spec, model, data, environment, metrics).

    `results_only` leaves out the spec fields that cannot change the numbers (INERT_FIELDS).
    """
    out: list[dict[str, Any]] = []
    for group, sections in GROUPS:
        if spec_only and group != "spec":
            continue
        for section in sections:
            for path, va, vb in diff_data({section: a.get(section, MISSING)}, {section: b.get(section, MISSING)}):
                if not show_all and under(path, VOLATILE):
                    continue
                item = {"path": path, "a": _plain(va), "b": _plain(vb), "group": group}
                if group == "spec":
                    item["affects_results"] = not under(path.removeprefix("spec."), INERT_FIELDS)
                    if results_only and not item["affects_results"]:
                        continue
                out.append(item)
    # within the spec group, what changes the numbers comes before what does not
    return sorted(out, key=lambda d: (_group_rank(d["group"]), d["group"] == "spec" and not d["affects_results"]))


def _group_rank(group: str) -> int:
    return [g for g, _ in GROUPS].index(group)


def _plain(value: Any) -> Any:
    return None if value is MISSING else value


def format_line(d: dict[str, Any]) -> str:
    a, b = d["a"], d["b"]
    line = f"{d['path']}: {_show(a)} -> {_show(b)}"
    if d["group"] == "metrics" and _number(a) and _number(b):
        line += f" ({b - a:+.4g})"
    if d.get("affects_results") is False:
        line += "  [no effect on results]"
    return line


def _number(v: Any) -> bool:
    """A finite number that arithmetic on floats can take (an int of 400 digits is not)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _show(v: Any) -> str:
    if v is None:
        return "(none)"
    if isinstance(v, float):
        return f"{v:.6g}" if abs(v) >= 1e-3 or v == 0 else repr(v)
    if isinstance(v, (dict, list, bool)) or v is None:
        return json.dumps(v)
    return repr(v) if isinstance(v, str) else str(v)


def diff_command(a: str, b: str, *, as_json: bool, show_all: bool, results_only: bool = False) -> int:
    kind_a, rec_a = load_side(a)
    kind_b, rec_b = load_side(b)
    diffs = diff_records(
        rec_a, rec_b, spec_only="spec" in (kind_a, kind_b), show_all=show_all, results_only=results_only
    )
    if as_json:
        print(json.dumps([{"path": d["path"], "a": d["a"], "b": d["b"]} for d in diffs], indent=2))
    else:
        for d in diffs:
            print(format_line(d))
    return 1 if diffs else 0


# ------------------------------------------------------------------------------------- runs


def runs_command(directory: str, *, name: str | None = None) -> int:
    """The table of runs under `directory`; exit 0 whatever it finds (even no directory: no runs)."""
    path = Path(directory)
    if not path.is_dir():
        why = "it is not a directory" if path.exists() else "no such directory"
        print(f"no runs under {directory}: {why}")
        return 0
    every = list_runs(path)
    rows = [r for r in every if not name or name in r["name"]]
    if not rows:
        if every:
            names = ", ".join(sorted({r["name"] for r in every}))
            print(f"no runs under {directory} whose name contains {name!r} (names there: {names})")
        else:
            print(f"no runs under {directory}")
        return 0
    header = ("name", "run id", "status", "iter", "best val", "avg tok/s", "age")
    table = [header] + [
        (
            r["name"], r["run_id"] + ("*" if r["moved"] else ""), r["status"], _cell(r["iter"]),
            _cell(r["best_val_loss"], ".4f"), _cell(r["tokens_per_sec"], ",.0f"), r["age"],
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    for r in rows:
        if r["moved"]:
            print(f"* {r['path']}: its manifest says {r['moved']} (a copied or renamed run directory)")
    problems = [r for r in rows if r.get("problem")]
    for r in problems:
        print(f"{r['path']}: {r['problem']}", file=sys.stderr)
    return 0


def _cell(value: Any, fmt: str = "") -> str:
    if value is None:
        return "-"
    try:
        return format(value, fmt)
    except (TypeError, ValueError):
        return str(value)


def list_runs(directory: Path, name_filter: str | None = None) -> list[dict[str, Any]]:
    """One row per run directory under `directory` (<out_dir>/<name>/<run_id>), newest first.

    A row's name and run id are its folders' (what `sample`, `diff` and `--resume` are given);
    `moved` is the manifest's `<name>/<run_id>` when that differs (a copied or renamed run dir).
    """
    if not directory.is_dir():
        raise InputError(f"{str(directory)!r} is not a directory")
    rows = []
    for run_dir in sorted(directory.glob("*/*")):
        if not run_dir.is_dir() or run_dir.name.startswith("."):
            continue
        if name_filter and name_filter not in run_dir.parent.name:
            continue
        manifest_path = run_dir / MANIFEST
        if not manifest_path.exists() and not (run_dir / "spec.toml").exists():
            continue  # not a run directory
        row: dict[str, Any] = {
            "name": run_dir.parent.name, "run_id": run_dir.name, "path": str(run_dir), "iter": None,
            "best_val_loss": None, "tokens_per_sec": None, "moved": None,
        }
        try:
            m = read_manifest(manifest_path)
        except ManifestError as e:
            row.update(status="unreadable", problem=str(e), created=None)
        else:
            # a hand-edited or foreign manifest may hold anything: each cell takes only what fits it
            metrics = m.get("metrics") if isinstance(m.get("metrics"), dict) else {}
            recorded = (_text(m.get("name"), row["name"]), _text(m.get("run_id"), row["run_id"]))
            row.update(
                status=_text(m.get("status"), "?"), iter=_finite(metrics.get("iter")),
                best_val_loss=_finite(metrics.get("best_val_loss")), tokens_per_sec=_finite(metrics.get("tokens_per_sec")),
                created=m.get("created_at"),
                moved=None if recorded == (row["name"], row["run_id"]) else "/".join(recorded),
            )
        row["sort"] = _timestamp(row.get("created")) or _mtime(manifest_path) or _mtime(run_dir)
        row["age"] = _age(row["sort"])
        rows.append(row)
    return sorted(rows, key=lambda r: r["sort"], reverse=True)


def _text(value: Any, default: str) -> str:
    return value if isinstance(value, str) and value and value.isprintable() else default


def _finite(value: Any) -> int | float | None:
    return value if _number(value) else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _timestamp(iso: Any) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.datetime.fromisoformat(iso).timestamp()
    except (ValueError, OverflowError, OSError):
        return None


def _age(ts: float) -> str:
    if not ts:
        return "-"
    seconds = max(0, datetime.datetime.now().timestamp() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
