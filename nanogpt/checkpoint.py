"""Checkpoints: written atomically, loaded with `weights_only=True`, found through the manifest.

A checkpoint is one `torch.save` file under `<run_dir>/checkpoints/`, named by the iteration it
was taken at; under `system.parallel = "fsdp"` it is a directory of shards instead
(nanogpt.sharded_checkpoint), and everything here takes either. It holds everything an exact
resume needs (model, optimizer, gradient scaler, the iteration, the best val loss, the metrics so
far, the spec and its hash: `training_state` builds it, `restore_training_state` puts it back) and
the model's architecture record and tokenizer, so a checkpoint alone is enough to rebuild the
model for sampling or finetuning. It holds no RNG state: every random draw of a step is seeded
from (seed, iteration, rank), so none is needed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import re
import shutil
import threading
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import attrs
import torch

from nanogpt.errors import InputError, NanoGPTError
from nanogpt.fileio import atomic_open, inside, read_regular_bytes

FORMAT = "nanogpt-checkpoint-1"
"""Value of the "format" key of every checkpoint this product writes."""

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(NanoGPTError):
    """No checkpoint of a run can be trusted, or one does not fit the model it should load into."""


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:08d}.pt"


def state_mismatch(expected: dict[str, torch.Tensor], given: Any) -> str | None:
    """What keeps state dict `given` from loading into a module whose state dict is `expected`."""
    if not isinstance(given, dict):
        return f"its weights are a {type(given).__name__}, not a dict of tensors"
    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {_names(missing)}")
    if unexpected:
        parts.append(f"unexpected {_names(unexpected)}")
    if parts:
        return "; ".join(parts)
    for key, tensor in expected.items():
        value = given[key]
        if not isinstance(value, torch.Tensor):
            return f"{key} is a {type(value).__name__}, not a tensor"
        if tuple(value.shape) != tuple(tensor.shape):
            return f"{key} has shape {tuple(value.shape)}, the model needs {tuple(tensor.shape)}"
    return None


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


TOKENIZER_KEYS = ("tokenizer", "vocab_size", "eot_id", "chars", "bos_id", "tokenizer_sha256", "tokenizer_json")
"""The part of a dataset's meta.json that `tokenizer_from_meta` needs."""


def tokenizer_record(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    """What a checkpoint stores of its dataset's meta.json to decode on its own (None without a tokenizer)."""
    if not isinstance(meta, dict) or "tokenizer" not in meta:
        return None
    return {key: meta[key] for key in TOKENIZER_KEYS if key in meta}


def training_state(
    *, model: Any, optimizer: Any, scaler: Any, tokenizer: Any, iteration: int, best_val_loss: float,
    val_loss: float | None, spec: dict[str, Any], spec_sha256: str, metrics: dict[str, Any], wall_seconds: float,
) -> dict[str, Any]:
    """The contents of a checkpoint: everything `restore_training_state` needs, and enough to sample alone."""
    return {
        "format": FORMAT,
        "model": model.state_dict(),
        "model_arch": model.arch(),
        # the dataset's tokenizer, so a checkpoint alone is enough to sample from
        "tokenizer": tokenizer_record(tokenizer.meta()) if tokenizer is not None else None,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "iter": iteration,
        "best_val_loss": best_val_loss,
        "val_loss": val_loss,
        "spec_sha256": spec_sha256,
        "spec": spec,
        "metrics": dict(metrics),
        "wall_seconds": wall_seconds,
    }


@attrs.frozen
class Restored:
    """Where a resumed run stands, read from its checkpoint (the weights are already loaded)."""

    iteration: int
    best_val_loss: float
    wall_seconds: float
    """Wall time of the run's earlier sessions."""
    metrics: dict[str, Any]
    scaler: dict[str, Any] | None
    """The gradient scaler's state (float16 runs), to load once the scaler exists."""


def restore_training_state(source: Path, state: dict[str, Any] | None, model: Any, optimizer: Any, map_location: Any) -> Restored:
    """Load a checkpoint's model and optimizer state in place; CheckpointError when they do not fit.

    `state` is the checkpoint already loaded (rank 0 loaded it to verify it), else `source` is read.
    Any checkpoint goes into any model: a sharded one (a DCP directory) is read by every process,
    each its own part; a whole one (a `.pt` file) is sharded as it loads into an fsdp model."""
    from nanogpt import sharded_checkpoint
    from nanogpt.parallel import is_sharded

    if sharded_checkpoint.is_sharded_checkpoint(source):
        state = sharded_checkpoint.restore(source, model, optimizer)
    else:
        if state is None:
            state = load_checkpoint(source, map_location=map_location)
        problem = state_mismatch(model.state_dict(), state.get("model")) if not is_sharded(model) else None
        if problem is not None:
            raise CheckpointError(f"checkpoint {str(source)!r} does not fit this run's model: {problem}")
        try:
            if is_sharded(model):
                sharded_checkpoint.load_whole_into(model, optimizer, state)
            else:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(
                f"checkpoint {str(source)!r} holds state that does not fit this run's model and optimizer ({e})"
            ) from None
    return Restored(
        iteration=int(state["iter"]),
        best_val_loss=float(state["best_val_loss"]),
        wall_seconds=float(state.get("wall_seconds", 0.0)),
        metrics=dict(state.get("metrics") or {}),
        scaler=state.get("scaler"),
    )


def load_checkpoint(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, unpickled with `weights_only=True`.

    A file that would need arbitrary Python objects to load is refused with a clear message, and
    nothing in it runs: the weights-only unpickler never imports or calls what the file names.
    """
    from nanogpt import sharded_checkpoint

    path = Path(path)
    if sharded_checkpoint.is_sharded_checkpoint(path):
        return sharded_checkpoint.load_whole(path)
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
    from nanogpt.sharded_checkpoint import is_sharded_checkpoint

    found = [p for p in (Path(run_dir) / CHECKPOINT_DIR).glob("ckpt-*") if p.is_file() or is_sharded_checkpoint(p)]
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
    from nanogpt.sharded_checkpoint import is_sharded_checkpoint

    run_dir = Path(run_dir)
    folder = (run_dir / CHECKPOINT_DIR).resolve()
    kept: dict[int, dict[str, Any]] = {}
    ignored = []
    for e in entries if isinstance(entries, list) else []:
        if not (isinstance(e, dict) and isinstance(e.get("step"), int) and not isinstance(e.get("step"), bool)
                and isinstance(e.get("sha256"), str)):
            ignored.append(f"ignoring a malformed checkpoint entry in the manifest: {_short(e)}")
            continue
        path = inside(run_dir, e.get("path"))
        if path is None or path.parent != folder:
            ignored.append(
                f"ignoring the manifest's checkpoint entry {_short(e.get('path'))}: it is not a file in "
                f"{CHECKPOINT_DIR}/ of this run, and paths outside it are never followed"
            )
            continue
        if not (path.is_file() or is_sharded_checkpoint(path)):
            ignored.append(f"checkpoint {e['path']} is listed in the manifest but no longer exists")
            continue
        kept[e["step"]] = {**e, "path": str(path.relative_to(run_dir.resolve()))}
    return [kept[k] for k in sorted(kept)], ignored


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def unrecorded_files(run_dir: str | os.PathLike[str], entries: list[dict[str, Any]]) -> list[Path]:
    """Checkpoint files in checkpoints/ that the manifest does not list (their sha256 is unknown)."""
    run_dir = Path(run_dir)
    listed = {run_dir / e["path"] for e in entries}
    return [p for p in checkpoint_paths(run_dir) if p not in listed]


class HashingWriter:
    """A file object for torch.save that hashes what it writes, so a checkpoint is never read back to hash it."""

    def __init__(self, f: Any):
        self.f = f
        self.sha256 = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(run_dir: str | os.PathLike[str], iteration: int, state: dict[str, Any]) -> tuple[Path, str]:
    """Write `state` as the checkpoint of `iteration`, atomically; returns its path and sha256.

    A crash leaves the old files: the new one is written under a temporary name and renamed.
    """
    path = Path(run_dir) / CHECKPOINT_DIR / checkpoint_name(iteration)
    with atomic_open(path, "wb") as f:
        writer = HashingWriter(f)
        torch.save(state, writer)
    return path, writer.sha256.hexdigest()


def snapshot(obj: Any, reuse: Any = None) -> Any:
    """`obj` with every tensor copied to the CPU: a copy the training loop can no longer change.

    `reuse` is an earlier snapshot of the same state: its tensors are overwritten in place, so a
    run's second and later checkpoints allocate (and fault in) no new memory. Copies from a GPU go
    to pinned memory, asynchronously, and are waited for once at the end.
    """
    copies_from_gpu = []
    copied: dict[tuple, torch.Tensor] = {}  # tensors seen already: tied weights stay one tensor

    def copy(value: Any, old: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach()
            key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                   tuple(value.stride()), value.dtype, value.device)
            if key in copied:
                return copied[key]
            if isinstance(old, torch.Tensor) and old.shape == value.shape and old.dtype == value.dtype:
                out = old
            else:
                out = torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
            out.copy_(value, non_blocking=value.is_cuda)
            if value.is_cuda:
                copies_from_gpu.append(value.device)
            copied[key] = out
            return out
        if isinstance(value, dict):
            old = old if isinstance(old, dict) else {}
            return {k: copy(v, old.get(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            old = old if isinstance(old, (list, tuple)) and len(old) == len(value) else [None] * len(value)
            return type(value)(copy(v, o) for v, o in zip(value, old))
        return value

    out = copy(obj, reuse)
    for device in set(copies_from_gpu):
        torch.cuda.synchronize(device)
    return out


class CheckpointWriter:
    """Saves checkpoints on a thread of their own: the loop waits only for a CPU copy of the state.

    For GPT-2 124M a checkpoint is ~1.5 GB; writing, fsyncing and publishing it held up every rank
    of the job (benchmarks/checkpoint_stall.py). One save at a time: a new one first waits for the
    last. `on_written(path, sha256)` runs (on the writer's thread) once a file is complete and
    published under its final name, so whoever records checkpoints never lists a partial one. A
    failed write is raised in the loop's thread at the next `save` or `wait`.
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._buffers: Any = None

    def save(self, iteration: int, state: dict[str, Any], on_written: Callable[[Path, str], None]) -> None:
        self.wait()  # also: the last save no longer reads the buffers the snapshot overwrites
        copied = self._buffers = snapshot(state, reuse=self._buffers)  # the only part the loop waits for

        def write() -> None:
            try:
                path, digest = save_checkpoint(self.run_dir, iteration, copied)
                on_written(path, digest)
            except BaseException as e:  # noqa: BLE001 - handed to the loop's thread
                self._error = e

        # a daemon: a process that is killed or exits mid-save leaves only a temporary file, which
        # the next resume removes
        self._thread = threading.Thread(target=write, name=f"checkpoint-{iteration}", daemon=True)
        self._thread.start()

    def wait(self) -> None:
        """Until the save in flight (if any) is published and recorded; its error, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error  # as it was raised: a full disk is reported as one, wherever it happened

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def prune(run_dir: str | os.PathLike[str], entries: list[dict[str, Any]], keep: int) -> list[dict[str, Any]]:
    """Delete all but the `keep` latest checkpoints and the best one; returns the entries kept.

    Only files inside the run's checkpoints/ are ever deleted, whatever an entry says.
    """
    run_dir = Path(run_dir)
    folder = (run_dir / CHECKPOINT_DIR).resolve()
    by_step = sorted(entries, key=lambda e: e["step"])
    kept = {id(e) for e in by_step[-keep:]}
    best = best_entry(entries)
    if best is not None:
        kept.add(id(best))
    for e in by_step:
        if id(e) not in kept:
            path = inside(run_dir, e["path"])
            if path is not None and path.parent == folder:
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
    from nanogpt import sharded_checkpoint
    from nanogpt.fileio import sha256_file

    sharded = sharded_checkpoint.is_sharded_checkpoint(path)
    try:
        digest = sharded_checkpoint.directory_digest(path)[0] if sharded else sha256_file(path)
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    except InputError as e:
        return f"cannot be verified: {e}"
    if digest != entry["sha256"]:
        return f"is corrupt or was replaced: its sha256 is {digest[:16]}..., the manifest recorded {entry['sha256'][:16]}..."
    try:
        # a sharded one's tensors are read later, by every process its own part
        state = sharded_checkpoint.read_state(path) if sharded else load_checkpoint(path, map_location="cpu")
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
