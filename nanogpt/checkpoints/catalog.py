"""A run's checkpoints: which exist, which to load, which to trust, which to delete.

A checkpoint is one `.pt` file under `<run_dir>/checkpoints/`, named by the iteration it was
taken at, or under `system.parallel = "fsdp"` a directory of shards; everything here takes
either. The manifest lists them with their sha256: a resume loads the newest that matches its
record and fits the run (`resume_checkpoint`), `sample` and friends the best or the latest
(`checkpoint_for`), and `prune` keeps the last few and the best. Paths read from a manifest are
never followed outside the run's checkpoints/."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from collections.abc import Callable
from typing import Any


from nanogpt.checkpoints import sharded
from nanogpt.checkpoints.files import CHECKPOINT_DIR
from nanogpt.checkpoints.state import FORMAT, load_checkpoint
from nanogpt.errors import CheckpointError, InputError
from nanogpt.fileio import inside, read_regular_bytes, sha256_file


def checkpoint_for(run_dir: str | os.PathLike[str], which: str = "best") -> Path:
    """The checkpoint of a run to load: `which` is "best" (lowest val loss) or "latest".

    The manifest lists the checkpoints that exist; when it is unreadable, the newest file in
    checkpoints/ is used. Falls back to the latest when no checkpoint has a val loss.
    """
    run_dir = Path(run_dir)
    entries, _ = recorded_checkpoints(run_dir, _manifest_entries(run_dir))
    if not entries:
        files = checkpoint_paths(run_dir)
        if not files:
            raise InputError(f"run {str(run_dir)!r} has no checkpoint")
        return files[-1]
    if which == "best":
        best = best_entry(entries)
        if best is not None:
            return run_dir / best["path"]
    return run_dir / max(entries, key=lambda e: e["step"])["path"]


def checkpoint_paths(run_dir: str | os.PathLike[str]) -> list[Path]:
    """The checkpoints in a run's checkpoints/, oldest first: `.pt` files, and sharded checkpoints' directories."""
    found = [p for p in (Path(run_dir) / CHECKPOINT_DIR).glob("ckpt-*") if p.is_file() or sharded.is_sharded_checkpoint(p)]
    return sorted(found, key=lambda p: p.name)


def best_entry(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The entry with the lowest val loss (the later one on a tie); None when none has one."""
    scored = [e for e in entries if _finite_number(e.get("val_loss"))]
    return min(scored, key=lambda e: (e["val_loss"], -e["step"])) if scored else None


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _manifest_entries(run_dir: Path) -> Any:
    try:
        manifest = json.loads(read_regular_bytes(run_dir / "manifest.json"))
        return manifest.get("checkpoints") or []
    except (OSError, ValueError, AttributeError, RecursionError):
        return []


def recorded_checkpoints(run_dir: str | os.PathLike[str], entries: Any) -> tuple[list[dict[str, Any]], list[str]]:
    """The manifest's checkpoint entries that name a file which exists in the run's checkpoints/.

    Returns (entries kept, sorted by step; one line for each entry left out and why). An entry
    whose path leads outside checkpoints/ (absolute, `..`, a link elsewhere) is never followed:
    it is left out with a warning, as is one that is malformed. An entry whose file is gone is
    left out too: the list is rebuilt from what exists.
    """
    run_dir = Path(run_dir)
    kept: dict[int, dict[str, Any]] = {}
    ignored = []
    for e in entries if isinstance(entries, list) else []:
        if not (isinstance(e, dict) and isinstance(e.get("step"), int) and not isinstance(e.get("step"), bool)
                and isinstance(e.get("sha256"), str)):
            ignored.append(f"ignoring a malformed checkpoint entry in the manifest: {_short(e)}")
            continue
        path = confined_checkpoint(run_dir, e.get("path"))
        if path is None:
            ignored.append(
                f"ignoring the manifest's checkpoint entry {_short(e.get('path'))}: it is not a file in "
                f"{CHECKPOINT_DIR}/ of this run, and paths outside it are never followed"
            )
            continue
        if not (path.is_file() or sharded.is_sharded_checkpoint(path)):
            ignored.append(f"checkpoint {e['path']} is listed in the manifest but no longer exists")
            continue
        kept[e["step"]] = {**e, "path": str(path.relative_to(run_dir.resolve()))}
    return [kept[k] for k in sorted(kept)], ignored


def confined_checkpoint(run_dir: Path, relative: object) -> Path | None:
    """`run_dir / relative`, links resolved, if that is an entry directly in the run's checkpoints/; else None.

    Two layers, each stopping what the other lets through: `inside` refuses whatever lands outside
    the run dir (alone, it stops a checkpoints/ that is itself a link to a folder elsewhere, whose
    files sit directly in checkpoints/ once resolved); `directly_in_checkpoints` refuses whatever
    is not directly in checkpoints/ (alone, it stops an entry naming the run's own manifest.json,
    or checkpoints/ itself, which prune would delete). Paths that climb out (`..`, absolute, a
    link to a file elsewhere) each stops alone.
    """
    path = inside(run_dir, relative)
    return path if path is not None and directly_in_checkpoints(run_dir, path) else None


def directly_in_checkpoints(run_dir: Path, path: Path) -> bool:
    """Whether resolved `path` is an entry of the run's checkpoints/ (itself resolved), not deeper, not elsewhere."""
    return path.parent == (run_dir / CHECKPOINT_DIR).resolve()


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def unrecorded_files(run_dir: str | os.PathLike[str], entries: list[dict[str, Any]]) -> list[Path]:
    """Checkpoint files in checkpoints/ that the manifest does not list (their sha256 is unknown)."""
    run_dir = Path(run_dir)
    listed = {run_dir / e["path"] for e in entries}
    return [p for p in checkpoint_paths(run_dir) if p not in listed]


def prune(run_dir: str | os.PathLike[str], entries: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Delete all but the `keep` latest checkpoints and the best one; returns the entries kept.

    Only files inside the run's checkpoints/ are ever deleted, whatever an entry says.
    """
    run_dir = Path(run_dir)
    by_step = sorted(entries, key=lambda e: e["step"])
    kept = {id(e) for e in by_step[-keep:]}
    best = best_entry(entries)
    if best is not None:
        kept.add(id(best))
    for e in by_step:
        if id(e) not in kept:
            path = confined_checkpoint(run_dir, e["path"])
            if path is not None:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
    return [e for e in by_step if id(e) in kept]


def resume_checkpoint(
    run_dir: str | os.PathLike[str],
    manifest: dict[str, Any],
    usable: Callable[[dict[str, Any]], str | None],
    *,
    force: bool,
    say: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The checkpoint a resume continues from, verified, and the manifest's rebuilt checkpoint list.

    Newest first, each recorded checkpoint is checked against the sha256 the manifest recorded,
    loaded (weights only, onto the CPU) and put to `usable(state)` (None when it fits the run,
    else why not); the first that passes is returned with its entry as `state["entry"]`. A bad
    one is named and skipped. When none passes: CheckpointError (exit 1) if some exist but none
    is intact, InputError (exit 2) if the manifest recorded checkpoints that are all gone — unless
    `force`, which starts the run over (None). A run that never saved a checkpoint starts over too.
    """
    run_dir = Path(run_dir)
    recorded = manifest.get("checkpoints")
    entries, ignored = recorded_checkpoints(run_dir, recorded)
    for line in ignored:
        say(f"warning: {line}")
    for path in unrecorded_files(run_dir, entries):
        say(
            f"warning: {path.relative_to(run_dir)} is not recorded in the manifest (the run was stopped while "
            "recording it?); without a recorded sha256 it cannot be verified, so it is not used"
        )
    rejected = []
    for entry in reversed(entries):
        path = run_dir / entry["path"]
        problem = _verify(path, entry, usable)
        if isinstance(problem, dict):
            return [e for e in entries if e["step"] <= entry["step"] and e not in rejected], {**problem, "entry": entry}
        rejected.append(entry)
        say(f"warning: checkpoint {entry['path']} {problem}; it is not used")
    if force:
        say(f"--force: no usable checkpoint in {run_dir}; the run starts over from iteration 0")
        return [], None
    if rejected:
        raise CheckpointError(
            f"run {str(run_dir)!r} has no intact checkpoint to resume from (see the warnings above); "
            "pass --force to start it over from iteration 0"
        )
    if isinstance(recorded, list) and recorded:
        raise InputError(
            f"run {str(run_dir)!r} recorded checkpoints, but none of them exists any more "
            f"({CHECKPOINT_DIR}/ was emptied or moved?): a resume would start over from iteration 0 and "
            "replace its metrics. Put the checkpoints back, or pass --force to start over"
        )
    say(f"{run_dir} saved no checkpoint before it stopped: starting from iteration 0")
    return [], None


def _verify(path: Path, entry: dict[str, Any], usable: Callable[[dict[str, Any]], str | None]) -> dict[str, Any] | str:
    """The loaded state of a checkpoint that is intact and fits, else why it is not."""
    is_directory = sharded.is_sharded_checkpoint(path)
    try:
        digest = sharded.directory_digest(path)[0] if is_directory else sha256_file(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except InputError as e:
        return f"cannot be verified: {e}"
    if digest != entry["sha256"]:
        return f"is corrupt or was replaced: its sha256 is {digest[:16]}..., the manifest recorded {entry['sha256'][:16]}..."
    try:
        # a sharded one's tensors are read later, by every process its own part
        state = sharded.read_state(path) if is_directory else load_checkpoint(path, map_location="cpu")
    except InputError as e:
        return f"cannot be loaded: {e}"
    if state.get("format") != FORMAT:
        return f"has format {state.get('format')!r}, not {FORMAT!r}"
    if state.get("iter") != entry["step"]:
        return f"holds iteration {state.get('iter')!r}, but the manifest says {entry['step']}"
    problem = usable(state)
    return problem if problem is not None else state


def remove_torn_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files (and sharded checkpoints' directories) a killed run left half-written in
    checkpoints/; returns them."""
    torn = list((Path(run_dir) / CHECKPOINT_DIR).glob(".ckpt-*.tmp"))
    for path in torn:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return torn
