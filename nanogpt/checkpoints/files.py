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
import weakref
import zipfile
from pathlib import Path
from collections.abc import Callable, Iterator
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


ARENA_ALIGNMENT = 64
"""Bytes each tensor's place in a snapshot's arena is aligned to: enough for any dtype's view."""


def snapshot(obj: Any, reuse: Any = None, *, pin: bool | None = None) -> Any:
    """`obj` with every tensor copied to the CPU: a copy the training loop can no longer change.

    `reuse` is an earlier snapshot of the same state: its tensors are overwritten in place, so a
    run's second and later checkpoints allocate (and fault in) no new memory. The tensors that need
    memory are views into one arena of their summed size: one allocation, not one per tensor. Where
    the state is on a GPU (or `pin`) the arena is page-locked by registering exactly its bytes
    (`cudaHostRegister`): pinning tensor by tensor through the caching host allocator rounds each
    up to a power of two (GPT-2 124M's 1.5 GB of state took ~2.4 GB). Copies from a GPU go there
    asynchronously and are waited for once at the end.
    """
    copies_from_gpu = []

    def walk(value: Any, old: Any, place: Callable[[torch.Tensor], torch.Tensor], seen: dict[tuple, torch.Tensor]) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.detach()
            key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
                   tuple(value.stride()), value.dtype, value.device)
            if key not in seen:  # tensors seen already (tied weights) stay one tensor
                reusable = isinstance(old, torch.Tensor) and old.shape == value.shape and old.dtype == value.dtype
                seen[key] = old if reusable else place(value)
            return seen[key]
        if isinstance(value, dict):
            old = old if isinstance(old, dict) else {}
            return {k: walk(v, old.get(k), place, seen) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            old = old if isinstance(old, (list, tuple)) and len(old) == len(value) else [None] * len(value)
            return type(value)(walk(v, o, place, seen) for v, o in zip(value, old))
        return value

    # first the bytes the new buffers need (and whether any state is on a GPU), then the arena
    needed: list[int] = []
    on_gpu: list[bool] = []

    def measure(t: torch.Tensor) -> torch.Tensor:
        needed.append(_aligned(t.numel() * t.element_size()))
        on_gpu.append(t.is_cuda)
        return t

    walk(obj, reuse, measure, {})
    arena = host_arena(sum(needed), pin=any(on_gpu) if pin is None else pin)
    offset = 0

    def place(t: torch.Tensor) -> torch.Tensor:
        nonlocal offset
        nbytes = t.numel() * t.element_size()
        view = arena[offset:offset + nbytes].view(t.dtype).view(t.shape)
        offset += _aligned(nbytes)
        return view

    copied: dict[tuple, torch.Tensor] = {}
    out = walk(obj, reuse, place, copied)
    sources: dict[tuple, torch.Tensor] = {}
    # copy each source into its buffer (the keys map a source tensor to its buffer)
    for value in _tensors_of(obj):
        value = value.detach()
        key = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape),
               tuple(value.stride()), value.dtype, value.device)
        if key in sources:
            continue
        sources[key] = value
        copied[key].copy_(value, non_blocking=value.is_cuda)
        if value.is_cuda:
            copies_from_gpu.append(value.device)
    for device in set(copies_from_gpu):
        torch.cuda.synchronize(device)
    return out


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ARENA_ALIGNMENT) * ARENA_ALIGNMENT


def _tensors_of(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors_of(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors_of(v)


def _register_host_memory(data_ptr: int, nbytes: int) -> None:
    from torch.cuda import _pin_memory_utils

    _pin_memory_utils.pin_memory(data_ptr, nbytes)


def _unregister_host_memory(data_ptr: int) -> None:
    from torch.cuda import _pin_memory_utils

    _pin_memory_utils.unpin_memory(data_ptr)


def host_arena(nbytes: int, *, pin: bool) -> torch.Tensor:
    """`nbytes` of CPU memory as one uint8 tensor; page-locked, exactly that many bytes, when `pin`.

    The memory is a numpy array's, which the tensor's storage keeps alive: the registration is undone
    when the last view of it is let go, before the memory is freed (a finalizer on the array, which
    numpy runs before releasing its data; one on the tensor would run as soon as the tensor object,
    not its storage, is let go)."""
    import numpy as np

    owner = np.empty(max(nbytes, 1), dtype=np.uint8)
    arena = torch.from_numpy(owner)
    if pin and nbytes:
        ptr = arena.data_ptr()
        _register_host_memory(ptr, nbytes)
        weakref.finalize(owner, _unregister_host_memory, ptr)
        PINNED.add(owner)
    return arena


class _PinnedArenas:
    """The arenas page-locked by `host_arena` that are still alive, to report their bytes."""

    def __init__(self) -> None:
        self._arenas: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # by address

    def add(self, owner: Any) -> None:
        self._arenas[owner.ctypes.data] = owner

    @property
    def nbytes(self) -> int:
        return sum(int(a.nbytes) for a in list(self._arenas.values()))


PINNED = _PinnedArenas()
"""Page-locked bytes the checkpoint writers hold now: `PINNED.nbytes`."""


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

    def close(self) -> None:
        """The end of the run's saves: until the last is on disk (its error, if it failed)."""
        self.wait()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
