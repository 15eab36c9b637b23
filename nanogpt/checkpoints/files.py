"""Checkpoints as `.pt` files: written atomically off the loop's thread, read with `weights_only=True`.

`CheckpointWriter` is the writer both formats share (nanogpt.checkpoints.sharded's subclasses it):
one save at a time, the loop waiting only for a CPU copy of the state (`snapshot`), the file
hashed as it is written and published under its final name by a rename."""

from __future__ import annotations
import hashlib
import os
import pickle
import re
import threading
import zipfile
from pathlib import Path
from collections.abc import Callable
from typing import Any
import torch
from nanogpt.errors import InputError
from nanogpt.fileio import atomic_open


CHECKPOINT_DIR = "checkpoints"


def checkpoint_name(iteration: int) -> str:
    return f"ckpt-{iteration:08d}.pt"


def load_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """A `.pt` checkpoint's contents, unpickled with `weights_only=True`.

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
