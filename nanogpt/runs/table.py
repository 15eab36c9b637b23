"""`nanogpt runs [DIR]`: the table of runs under a directory, read from their manifests only.

Truncated or foreign manifests are shown as what they are, never a traceback; nothing is written."""

from __future__ import annotations
import datetime
import sys
from pathlib import Path
from typing import Any
from nanogpt.errors import InputError
from nanogpt.runs.diff import _number
from nanogpt.runs.manifest import MANIFEST, ManifestError, read_manifest


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
