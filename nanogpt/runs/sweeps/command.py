"""`nanogpt sweep`: plan the members, validate every one, then list them, stop (`--dry-run`) or run them.

Nothing starts until every member is valid: one bad member stops the sweep with exit 2, naming its
values. A sweep's record (sweep.json) is made or joined before the first member starts; joining
one (`--resume SWEEP_DIR`, or a `--sweep-id` that exists, as a job array's tasks do) checks that
it describes the same members, so two commands never mix two sweeps in one record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError
from nanogpt.runs.manifest import MANIFEST, new_run_id, now_iso, read_manifest
from nanogpt.config.problems import SpecError
from nanogpt.config.canonical import resolved, results_sha256, sha256_of_data
from nanogpt.config.problems import Problem
from nanogpt.config.load import SpecTree, read_spec, resolve_spec
from nanogpt.config.sweep import Member, SweepPlan, plan_sweep
from nanogpt.runs.sweeps.launch import EXIT_INTERRUPTED, Launcher, Planned, build_slots
from nanogpt.runs.sweeps.record import SCHEMA_VERSION, SweepRecord, sweep_dir_for

SHOWN_INVALID = 10
"""Groups of invalid members reported in full; the rest are counted."""


class InvalidMembers(InputError):
    """Some members of a sweep are not valid specs; nothing was started."""


def sweep_command(paths: list[str], words: list[str], args: argparse.Namespace) -> int:
    _check_flags(paths, words, args)
    from nanogpt.console import survive_closed_console

    with survive_closed_console():
        if args.resume is not None:
            record = SweepRecord(Path(args.resume).absolute())
            data = record.read()
            cwd = data.get("cwd")
            if not isinstance(cwd, str) or not Path(cwd).is_dir():
                raise InputError(f"{str(record.path)!r}: the sweep ran in {cwd!r}, which is not a directory here")
            with _working_dir(cwd):  # its spec, data and runs are where they were
                return _sweep(str(data["spec"]), [str(w) for w in data["overrides"]], args, record, str(data["id"]))
        if getattr(args, "seeds", None) is not None:
            words = [*words, seeds_word(read_spec(paths[0]), words, args.seeds)]
        return _sweep(paths[0], words, args, None, args.sweep_id)


def seeds_word(tree: SpecTree, words: list[str], n: int) -> str:
    """`--seeds N` as the axis it stands for: `seed=S,S+1,...,S+N-1`, S the seed the spec and the plain
    overrides give. It is the last axis, so each configuration's replicates are neighbours; it is kept
    in sweep.json's overrides like any word, so `--resume` runs the same seeds."""
    from nanogpt.config.sweep import axis_of

    plain = [w for w in words if axis_of(w) is None and not w.partition("=")[0].strip().startswith("sweep")]
    exp, _ = resolve_spec(tree, plain, sweep_member=True)
    return "seed=" + ",".join(str(exp.seed + i) for i in range(n))


def _check_flags(paths: list[str], words: list[str], args: argparse.Namespace) -> None:
    def usage(message: str) -> InputError:
        return InputError(f"usage error: sweep: {message}")

    if args.resume is not None:
        if paths or words:
            raise usage("--resume SWEEP_DIR takes no SPEC or overrides: its sweep.json has them")
        if args.sweep_id is not None:
            raise usage("--resume SWEEP_DIR already names the sweep; leave out --sweep-id")
    elif len(paths) != 1:
        raise usage("takes exactly one SPEC (or --resume SWEEP_DIR)")
    seeds = getattr(args, "seeds", None)
    if seeds is not None:
        if args.resume is not None:
            raise usage("--resume SWEEP_DIR continues the seeds its sweep.json has; leave out --seeds")
        if seeds < 1:
            raise usage(f"--seeds must be at least 1 (got {seeds})")
        if any(w.partition("=")[0].strip() == "seed" for w in words):
            raise usage("--seeds N sets the seed axis: leave out the seed= word (or give seed=a,b,c alone)")
    if args.jobs < 1:
        raise usage(f"--jobs must be at least 1 (got {args.jobs})")
    if args.gpus_per_run is not None and args.gpus_per_run < 1:
        raise usage(f"--gpus-per-run must be at least 1 (got {args.gpus_per_run})")
    if args.index is not None and args.sweep_id is None and args.resume is None:
        raise usage("--index runs one member of a named sweep: give --sweep-id ID (the same in every task) or --resume SWEEP_DIR")
    if args.sweep_id is not None:
        from nanogpt.config.checks import SAFE_NAME

        try:
            SAFE_NAME(None, None, args.sweep_id)
        except ValueError as e:
            raise usage(f"--sweep-id {e}") from None


@contextlib.contextmanager
def _working_dir(path: str) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def _sweep(spec: str, words: list[str], args: argparse.Namespace, record: SweepRecord | None, sweep_id: str | None) -> int:
    tree = read_spec(spec)
    plan = plan_sweep(tree.sweep, words, tree.source)
    members = plan.members()
    if args.list:
        for m in members:
            print(f"{m.index}  {m.label()}".rstrip())
        return 0
    planned = validate_members(tree, members)
    if args.dry_run:
        for p in planned:
            print(f"{p.member.index}  {p.member.label()}".rstrip())
        print(f"ok: {len(planned)} member{'s' if len(planned) != 1 else ''} of {spec} {'are' if len(planned) != 1 else 'is'} valid (nothing was started)")
        return 0
    # no more slots than members to run: a slot's share of the cores is all the cores over the slots
    slots = build_slots(1 if args.index is not None else min(args.jobs, len(planned)), args.gpus_per_run)
    if record is None:
        first = planned[0]
        sweep_id = sweep_id or new_run_id()
        record = SweepRecord(sweep_dir_for(str(first.run_parent.parent), first.name, sweep_id))
    assert sweep_id is not None
    joined = record.exists()
    _create_or_join(record, sweep_id, spec, words, plan, planned)
    launcher = Launcher(record, sweep_id, spec, planned, slots, rerun=args.rerun)

    if args.index is not None:
        if not 0 <= args.index < len(planned):
            raise InputError(f"--index {args.index}: the sweep has {len(planned)} members (0-{len(planned) - 1})")
        status = launcher.run([args.index])[args.index]
        if args.index in launcher.busy:
            return 2
        return {"completed": 0, "interrupted": EXIT_INTERRUPTED}.get(status, 1)

    axes = " x ".join(plan.axes_record()) or "no axes"
    at_a_time = f", {len(slots)} at a time" if len(slots) > 1 else ""
    print(f"sweep {sweep_id}: {'continuing ' if joined else ''}{len(planned)} members of {spec} ({axes}){at_a_time} -> {record.dir}", flush=True)
    launcher.run([p.member.index for p in planned])
    return _summary(record, launcher)


def _summary(record: SweepRecord, launcher: Launcher) -> int:
    data = record.read()
    counts: dict[str, int] = {}
    lines = []
    for m in data["members"]:
        counts[m["status"]] = counts.get(m["status"], 0) + 1
        run_dir = record.run_dir_of(m)
        best = None
        if run_dir is not None and (run_dir / MANIFEST).exists():
            with contextlib.suppress(InputError):
                best = (read_manifest(run_dir / MANIFEST).get("metrics") or {}).get("best_val_loss")
        shown = f"{best:.4f}" if isinstance(best, (int, float)) else "-"
        values = " ".join(f"{k}={json.dumps(v)}" for k, v in m["values"].items())
        lines.append(f"  {m['index']:>3}  {m['status']:<11}  {shown:>8}  {values}")
    print(f"sweep {data['id']}: {data['status']} ({', '.join(f'{n} {s}' for s, n in counts.items())})")
    print(f"  {'#':>3}  {'status':<11}  {'best val':>8}  values")
    print("\n".join(lines))
    print(f"compare: nanogpt compare {record.dir}\nplot:    nanogpt plot {record.dir} -o {record.dir / 'loss.png'}", flush=True)
    if launcher.stop is not None:
        print(f"continue it with: nanogpt sweep --resume {record.dir}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if launcher.busy:
        print(f"sweep: {len(launcher.busy)} member(s) are being run by other processes", file=sys.stderr)
    return 0 if data["status"] == "completed" else 1


# ------------------------------------------------------------------------------ validation


def validate_members(tree: SpecTree, members: list[Member]) -> list[Planned]:
    """Every member resolved and validated; InvalidMembers (exit 2) naming each bad one's values."""
    planned: list[Planned] = []
    invalid: dict[str, list[Member]] = {}
    out_dir = None
    for m in members:
        try:
            exp, _ = resolve_spec(tree, m.overrides, sweep_member=True)
        except SpecError as e:
            invalid.setdefault("\n".join(p.line() for p in e.problems), []).append(m)
            continue
        problems = []
        if exp.logging.run_id is not None:
            problems.append(Problem("logging.run_id", f"must be left out in a sweep: each member's run gets its own id (got {exp.logging.run_id!r})"))
        out_dir = out_dir if out_dir is not None else exp.logging.out_dir
        if exp.logging.out_dir != out_dir:
            problems.append(Problem("logging.out_dir", f"must be the same for every member, where the sweep dir is (got {exp.logging.out_dir!r}, member 0 has {out_dir!r})"))
        if problems:
            invalid.setdefault("\n".join(p.line() for p in problems), []).append(m)
            continue
        data = resolved(exp)
        planned.append(Planned(m, exp.name, Path(exp.logging.out_dir) / exp.name, sha256_of_data(data), results_sha256(data)))
    if invalid:
        raise InvalidMembers(_invalid_report(tree.source, invalid, len(members)))
    return planned


def _invalid_report(source: str, invalid: dict[str, list[Member]], total: int) -> str:
    bad = sum(len(ms) for ms in invalid.values())
    lines = [f"{source}: {bad} of {total} sweep member{'s' if total != 1 else ''} {'are' if bad != 1 else 'is'} invalid; none was started"]
    for problems, ms in list(invalid.items())[:SHOWN_INVALID]:
        if len(ms) == total and total > 1:
            lines.append("  every member:")
        elif len(ms) == 1:
            lines.append(f"  member {ms[0].index} ({ms[0].label() or 'no swept values'}):")
        else:
            shown = "; ".join(f"{m.index}: {m.label()}" for m in ms[:4]) + ("; ..." if len(ms) > 4 else "")
            lines.append(f"  members {', '.join(str(m.index) for m in ms[:12])}{', ...' if len(ms) > 12 else ''} ({shown}):")
        lines += [f"    {line}" for line in problems.splitlines()]
    if len(invalid) > SHOWN_INVALID:
        rest = sum(len(ms) for ms in list(invalid.values())[SHOWN_INVALID:])
        lines.append(f"  ... and {rest} more invalid member{'s' if rest != 1 else ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- record


def _create_or_join(record: SweepRecord, sweep_id: str, spec: str, words: list[str], plan: SweepPlan, planned: list[Planned]) -> None:
    members = [
        {"index": p.member.index, "values": _plain(p.member.values), "spec_sha256": p.spec_sha256, "run_dir": None, "status": "pending"}
        for p in planned
    ]

    def change(data: dict[str, Any] | None) -> dict[str, Any]:
        if data is None:
            return {
                "schema_version": SCHEMA_VERSION,
                "id": sweep_id,
                "name": planned[0].name,
                "status": "running",
                "axes": _plain(plan.axes_record()),
                "random": {"samples": plan.samples, "seed": plan.seed} if plan.random else None,
                "spec": spec,
                "overrides": list(words),
                "cwd": os.getcwd(),
                "command": shlex.join(getattr(sys, "orig_argv", None) or sys.argv),
                "created_at": now_iso(),
                "members": members,
            }
        _check_same_members(record, data, members)
        return data

    record.update(change)


def _check_same_members(record: SweepRecord, data: dict[str, Any], members: list[dict[str, Any]]) -> None:
    recorded = data["members"]
    if len(recorded) != len(members):
        raise InputError(
            f"{str(record.dir)!r} holds a sweep of {len(recorded)} members, not these {len(members)}: "
            "its spec or overrides differ (use another --sweep-id)"
        )
    for old, new in zip(recorded, members):
        if old.get("values") != new["values"] or old.get("spec_sha256") != new["spec_sha256"]:
            raise InputError(
                f"{str(record.dir)!r} holds a different sweep: its member {new['index']} was "
                f"{_words(old.get('values'))} (spec_sha256 {str(old.get('spec_sha256'))[:12]}), here it is "
                f"{_words(new['values'])} ({new['spec_sha256'][:12]}). The spec, a file it extends or the "
                "overrides changed since it started: start a new sweep (another --sweep-id), or restore them"
            )


def _words(values: Any) -> str:
    if not isinstance(values, dict) or not values:
        return "(no swept values)"
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def _plain(value: Any) -> Any:
    """As sweep.json reads back (JSON), so that a recorded member compares equal to a planned one."""
    return json.loads(json.dumps(value, allow_nan=True))
