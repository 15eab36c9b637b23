"""`nanogpt diff A B`: what differs between two runs, manifests or specs, one dotted path a line.

It reads manifests and specs only (never torch), tolerates truncated or foreign files with a
clear message, and never writes anything."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError
from nanogpt.runs.manifest import MANIFEST, read_manifest
from nanogpt.config.load import load_spec
from nanogpt.config.canonical import as_read_today, resolved
from nanogpt.config.dotted import INERT_FIELDS, MISSING, diff_data, under

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
        return "run", _spec_as_read_today(read_manifest(p / MANIFEST))
    if p.suffix == ".toml":
        exp, _ = load_spec(p, check_files=False)
        return "spec", {"spec": resolved(exp)}
    if p.suffix == ".json" or p.name == MANIFEST:
        return "run", _spec_as_read_today(read_manifest(p))
    if not p.exists():
        raise InputError(f"{path!r} does not exist")
    raise InputError(f"{path!r} is neither a run directory, a manifest.json nor a .toml spec")


def _spec_as_read_today(manifest: dict[str, Any]) -> dict[str, Any]:
    """A run's record with its spec as today's classes read it: a field added since the run is its
    default on both sides, not a difference (see `as_read_today`)."""
    return {**manifest, "spec": as_read_today(manifest["spec"])}


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


