"""Checkpoints: written atomically, loaded with `weights_only=True`, found through the manifest.

A checkpoint is one `torch.save` file under `<run_dir>/checkpoints/`, named by the iteration it
was taken at. It holds everything an exact resume needs (model, optimizer, gradient scaler, the
iteration, RNG states, the best val loss, the spec's hash) and the model's architecture, so a
checkpoint file alone is enough to rebuild the model for sampling or finetuning.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from nanogpt.errors import InputError
from nanogpt.fileio import atomic_open

FORMAT = "nanogpt-checkpoint-1"
"""Value of the "format" key of every checkpoint this product writes."""

CHECKPOINT_DIR = "checkpoints"


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:08d}.pt"


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, unpickled with `weights_only=True`.

    A file that would need arbitrary Python objects to load is refused with a clear message, and
    nothing in it runs: the weights-only unpickler never imports or calls what the file names.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        culprit = re.search(r"GLOBAL (\S+)", re.sub(r"\x1b\[[0-9;]*m", "", str(e)))
        named = f" It names {culprit.group(1)}." if culprit else ""
        raise InputError(
            f"refusing to load {str(path)!r}: it holds more than weights and plain data, and "
            f"unpickling it could run code from the file; nothing in it was run.{named}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise InputError(f"cannot read checkpoint {str(path)!r}: it is truncated or not a torch file ({e})") from None
    if not isinstance(state, dict):
        raise InputError(f"checkpoint {str(path)!r} holds a {type(state).__name__}, not a dict of state")
    return state


def checkpoint_for(run_dir: str | os.PathLike[str], which: str = "best") -> Path:
    """The checkpoint of a run to load: `which` is "best" (lowest val loss) or "latest".

    The manifest lists the checkpoints that exist; when it is unreadable, the newest file in
    checkpoints/ is used. Falls back to the latest when no checkpoint has a val loss.
    """
    run_dir = Path(run_dir)
    entries = _manifest_checkpoints(run_dir)
    entries = [e for e in entries if (run_dir / e["path"]).is_file()]
    if not entries:
        files = sorted((run_dir / CHECKPOINT_DIR).glob("ckpt-*.pt"))
        if not files:
            raise InputError(f"run {str(run_dir)!r} has no checkpoint")
        return files[-1]
    if which == "best":
        scored = [e for e in entries if isinstance(e.get("val_loss"), (int, float))]
        if scored:
            return run_dir / min(scored, key=lambda e: (e["val_loss"], -e["step"]))["path"]
    return run_dir / max(entries, key=lambda e: e["step"])["path"]


def _manifest_checkpoints(run_dir: Path) -> list[dict[str, Any]]:
    try:
        manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
        entries = manifest.get("checkpoints") or []
        return [e for e in entries if isinstance(e, dict) and "path" in e and isinstance(e.get("step"), int)]
    except (OSError, ValueError, AttributeError):
        return []


def save_checkpoint(run_dir: str | os.PathLike[str], iteration: int, state: dict[str, Any]) -> Path:
    """Write `state` as the checkpoint of `iteration`, atomically: a crash leaves the old files."""
    path = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(iteration)
    with atomic_open(path, "wb") as f:
        torch.save(state, f)
    return path


def prune(run_dir: str | os.PathLike[str], entries: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Delete all but the `keep` latest checkpoints and the best one; returns the entries kept."""
    run_dir = Path(run_dir)
    by_step = sorted(entries, key=lambda e: e["step"])
    kept = {id(e) for e in by_step[-keep:]}
    scored = [e for e in entries if isinstance(e.get("val_loss"), (int, float))]
    if scored:
        kept.add(id(min(scored, key=lambda e: (e["val_loss"], -e["step"]))))
    for e in by_step:
        if id(e) not in kept:
            (run_dir / e["path"]).unlink(missing_ok=True)
    return [e for e in by_step if id(e) in kept]


def remove_torn_files(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Delete temporary files a killed run left half-written in checkpoints/; returns them."""
    torn = list((Path(run_dir) / CHECKPOINT_DIR).glob(".ckpt-*.tmp"))
    for path in torn:
        path.unlink(missing_ok=True)
    return torn
