"""Sharded checkpoints (`system.parallel = "fsdp"`): one directory per checkpoint, written with DCP.

`checkpoints/ckpt-00000100.dcp/` holds
- DCP's files (`.metadata`, `__<rank>_<n>.distcp`): the model's and the optimizer's tensors, each
  process writing its own shards, so no process ever holds the whole state;
- `state.pt`: the rest of `nanogpt.checkpoints.state.training_state` (iteration, spec, architecture,
  tokenizer, the optimizer's param groups), plain data that loads with `weights_only`.

It is written under `.ckpt-00000100.dcp.tmp/` and renamed by rank 0 once every process's shards and
DCP's metadata are complete, so a reader never sees a partial one. The manifest records the sha256
of its file listing (`sha256sum`'s lines: each file's name and sha256), so a changed, added or
missing file fails verification. DCP reshards when it loads: a checkpoint saved by N processes
loads into M of them, or into one whole model (ddp, `sample`, `export`, `init_from`), from the same
files. DCP's pickled metadata is read with an unpickler that admits only DCP's own record types,
and only tensors are stored, so loading one runs nothing from the files.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nanogpt.checkpoints.files import CHECKPOINT_DIR, CheckpointWriter
from nanogpt.checkpoints.files import load_file
from nanogpt.errors import CheckpointError, InputError
from nanogpt.fileio import fsync_dir, sha256_file

SUFFIX = ".dcp"
"""A sharded checkpoint's directory name: `ckpt-00000100.dcp`."""

STATE_FILE = "state.pt"
METADATA_FILE = ".metadata"


def is_sharded(model: Any) -> bool:
    """Whether `model` is sharded with FSDP2 (`system.parallel = "fsdp"`): its state is DTensors."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def is_sharded_checkpoint(path: str | os.PathLike[str]) -> bool:
    path = Path(path)
    return path.is_dir() and (path / STATE_FILE).is_file() and (path / METADATA_FILE).is_file()


def directory_digest(path: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """(sha256 of the listing, {file name: sha256}) of a checkpoint directory's files.

    The listing is `sha256sum`'s output over the sorted names, so `cd DIR && sha256sum * .metadata`
    shows the same lines. Anything but a regular file in it (a link, a folder) is an error."""
    path = Path(path)
    files = {}
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if not entry.is_file(follow_symlinks=False):
            raise InputError(f"checkpoint {str(path)!r} holds {entry.name!r}, which is not a regular file")
        files[entry.name] = sha256_file(entry.path)
    listing = "".join(f"{digest}  {name}\n" for name, digest in files.items())
    return hashlib.sha256(listing.encode()).hexdigest(), files


# ------------------------------------------------------------------------------- reading safely


_DTYPE_NAMES = frozenset({
    "float32", "float64", "float16", "bfloat16", "complex64", "complex128", "uint8", "int8", "int16", "int32",
    "int64", "bool", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "uint16", "uint32",
    "uint64",
})
"""torch's dtypes by name: spelt out rather than found with getattr, so no lookup reaches anything else."""


class _MetadataUnpickler(pickle.Unpickler):
    """DCP's metadata is a pickle: admit DCP's record types and torch's dtypes and sizes, nothing else.

    Exact (module, name) pairs only: a module's other attributes include what it imported (DCP's
    metadata module imports `os`), and protocol 4 resolves a dotted name such as `os.system`
    through them, so a name is never looked up unless it is one of these."""

    ALLOWED = frozenset({
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch.serialization", "_get_layout"),
        ("torch", "Size"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
        *(("torch.distributed.checkpoint.metadata", name) for name in (
            "Metadata", "MetadataIndex", "StorageMeta", "TensorProperties", "TensorStorageMetadata",
            "ChunkStorageMetadata", "BytesStorageMetadata", "_MEM_FORMAT_ENCODING",
        )),
        *(("torch", name) for name in _DTYPE_NAMES),
    })

    def find_class(self, module: str, name: str) -> Any:
        if "." not in name and (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a DCP metadata file may not name {module}.{name}")


def read_metadata(path: Path) -> Any:
    """DCP's metadata of a sharded checkpoint, unpickled safely; InputError for anything but tensors' records."""
    from torch.distributed.checkpoint.metadata import StorageMeta, TensorStorageMetadata

    try:
        metadata = _MetadataUnpickler(io.BytesIO((path / METADATA_FILE).read_bytes())).load()
    # the unpickler can construct nothing but DCP's records, so any failure in it is a malformed file
    except Exception as e:  # noqa: BLE001
        raise InputError(f"checkpoint {str(path)!r}: cannot read its DCP metadata file ({e})") from None
    items = getattr(metadata, "state_dict_metadata", None)
    if not isinstance(items, dict) or not all(isinstance(v, TensorStorageMetadata) for v in items.values()):
        raise InputError(f"checkpoint {str(path)!r}: its DCP metadata holds more than tensors; it is not one this product wrote")
    if getattr(metadata, "storage_meta", None) is None:
        metadata.storage_meta = StorageMeta()
    return metadata


def _safe_reader(path: Path) -> Any:
    """DCP's file reader, reading the metadata with `read_metadata` (checked once here, before DCP
    starts, so a bad file is reported as itself rather than inside DCP's own exception)."""
    from torch.distributed.checkpoint import FileSystemReader

    read_metadata(path)

    class SafeReader(FileSystemReader):
        def read_metadata(self, *args: Any, **kwargs: Any) -> Any:
            metadata = read_metadata(path)
            metadata.storage_meta.load_id = self.load_id
            return metadata

    return SafeReader(path)


def read_state(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sharded checkpoint's `state.pt`: everything but the tensors."""
    return load_file(Path(path) / STATE_FILE)


def load_whole(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A sharded checkpoint as one process's dict, the same as a `.pt` checkpoint's for reading its
    weights: `state.pt`'s entries, and "model" the whole state dict (the optimizer's shards are not
    read). No process group is needed; the shards are stitched together on the CPU."""
    # what torch's own converter (torch.distributed.checkpoint.format_utils.dcp_to_torch_save) calls
    from torch.distributed.checkpoint.default_planner import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    path = Path(path)
    state = read_state(path)
    tensors: dict[str, Any] = {}
    try:
        _load_state_dict(tensors, storage_reader=_safe_reader(path), planner=_EmptyStateDictLoadPlanner(keys={"model"}), no_dist=True)
    except InputError:
        raise
    except _dcp_failures() as e:
        raise InputError(f"cannot read sharded checkpoint {str(path)!r}: {_what_failed(e)}") from None
    state["model"] = tensors.get("model", {})
    return state


def _what_failed(e: BaseException) -> str:
    """The first line of what went wrong; inside a DCP CheckpointException, of the first rank's own error."""
    from torch.distributed.checkpoint.api import CheckpointException

    if isinstance(e, CheckpointException) and e.failures:
        e = next(iter(e.failures.values()))[0]
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _dcp_failures() -> tuple[type[BaseException], ...]:
    """What DCP raises for a missing, torn or mismatched file: its CheckpointException (a
    BaseException, not an Exception) wrapping each rank's error, or the error itself."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (Exception, CheckpointException)


# ----------------------------------------------------------------------------- state <-> files


def _split(tree: Any) -> tuple[Any, Any]:
    """(the tensors of a nested dict, everything else): DCP stores only the first, state.pt the second."""
    if isinstance(tree, dict):
        tensors, plain = {}, {}
        for key, value in tree.items():
            t, p = _split(value)
            if t is not None:
                tensors[key] = t
            if p is not None:
                plain[key] = p
        return tensors or None, plain or None
    return (tree, None) if isinstance(tree, torch.Tensor) else (None, tree)


def _merge(tensors: Any, plain: Any) -> Any:
    if isinstance(tensors, dict) or isinstance(plain, dict):
        tensors, plain = tensors or {}, plain or {}
        return {key: _merge(tensors.get(key), plain.get(key)) for key in {**plain, **tensors}}
    return tensors if tensors is not None else plain


def sharded_state(model: Any, optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(this process's tensors for DCP, the optimizer's plain entries): the model's and the optimizer's
    state keyed by parameter name, sharded as the model is (whole tensors for an unsharded one)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_sd, optim_sd = get_state_dict(model, optimizer)
    optim_tensors, optim_plain = _split(optim_sd)
    return {"model": model_sd, "optimizer": optim_tensors or {}}, optim_plain or {}


def restore(path: str | os.PathLike[str], model: Any, optimizer: Any) -> dict[str, Any]:
    """Load a sharded checkpoint into `model` and `optimizer` (sharded or not, on any number of
    processes: DCP reads each process's part); returns its `state.pt` entries."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    path = Path(path)
    state = read_state(path)
    tensors, _ = sharded_state(model, optimizer)  # the shapes and shards to fill
    try:
        dcp.load(tensors, storage_reader=_safe_reader(path), no_dist=not torch.distributed.is_initialized())
    except InputError:
        raise
    except _dcp_failures() as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be loaded into this run's model and optimizer: {_what_failed(e)}") from None
    optim_sd = _merge(tensors["optimizer"], state.get("optimizer_plain", {}))
    set_state_dict(model, optimizer, model_state_dict=tensors["model"], optim_state_dict=optim_sd)
    return state


def load_whole_into(model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Put a whole (`.pt`) checkpoint's model and optimizer state into a sharded model and its optimizer.

    The file's optimizer state is keyed by position, as `Optimizer.state_dict` writes it; positions
    follow the optimizer's parameter groups, which the same spec builds in the same order, so each
    becomes the name of the parameter at that position."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    saved = state["optimizer"]
    by_name = {
        "state": {order[i]: value for i, value in saved["state"].items()},
        "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved["param_groups"]],
    }
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=by_name,
                   options=StateDictOptions(full_state_dict=True))


# ------------------------------------------------------------------------------------ writing


class ShardedCheckpointWriter(CheckpointWriter):
    """Saves sharded checkpoints: every process writes its shards, rank 0 publishes the directory.

    `asynchronous`: DCP's async_save, so the loop waits only for a CPU copy of its shards; the
    writing, the hashing and the publishing go on in the background. As the writer of `.pt` files
    (whose `wait` and `busy` this is): one save at a time, `on_written(path, sha256, files)` runs on
    rank 0 once the directory is published, and a failed save is raised in the loop's thread at
    the next `save` or `wait`.
    """

    def __init__(self, run_dir: str | os.PathLike[str], *, is_main: bool, group: Any, asynchronous: bool):
        super().__init__(run_dir)
        self.is_main, self.group, self.asynchronous = is_main, group, asynchronous
        self._stager: Any = None  # made at the first asynchronous save, kept for the run (`close`)

    def stager(self, tensors: Any) -> Any:
        """The run's one DCP stager: its CPU copies are kept and written over by every later save (async_save
        would make a fresh one each time, allocating the whole state again); pinned, with non-blocking copies,
        where the state is on a GPU."""
        if self._stager is None:
            from torch.distributed.checkpoint.staging import DefaultStager, StagingOptions

            from nanogpt.checkpoints.files import _tensors_of

            on_gpu = any(_local(t).is_cuda for t in _tensors_of(tensors))
            self._stager = DefaultStager(StagingOptions(
                use_pinned_memory=on_gpu, use_shared_memory=False, use_async_staging=False, use_non_blocking_copy=on_gpu,
            ))
        return self._stager

    def close(self) -> None:
        """Let go of the stager's copies once the last save is on disk."""
        self.wait()
        if self._stager is not None:
            self._stager.close()
            self._stager = None

    def save(self, iteration: int, state: dict[str, Any], model: Any, optimizer: Any,  # type: ignore[override]
             on_written: Callable[[Path, str, dict[str, str]], None]) -> None:
        import torch.distributed.checkpoint as dcp

        self.wait()
        final = self.run_dir / CHECKPOINT_DIR / f"ckpt-{iteration:08d}{SUFFIX}"
        tmp = final.with_name(f".{final.name}.tmp")
        tensors, optim_plain = sharded_state(model, optimizer)
        head = {k: v for k, v in state.items() if k not in ("model", "optimizer")}
        head["optimizer_plain"] = optim_plain
        if self.asynchronous:
            future = dcp.async_save(tensors, checkpoint_id=tmp, storage_writer=cpu_writer(tmp), process_group=self.group,
                                    async_stager=self.stager(tensors))
        else:
            dcp.save(tensors, checkpoint_id=tmp, storage_writer=cpu_writer(tmp), process_group=self.group)
            future = None

        def finish() -> None:
            try:
                if future is not None:
                    future.result()
                if self.is_main:  # every process's shards and the metadata are complete by now
                    _publish(tmp, final, head, on_written)
            except BaseException as e:  # noqa: BLE001 - handed to the loop's thread
                self._error = e

        if future is None:
            finish()
            self.wait()  # raises what failed
            return
        self._thread = threading.Thread(target=finish, name=f"checkpoint-{iteration}", daemon=True)
        self._thread.start()


def _local(t: Any) -> Any:
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def cpu_writer(path: Path) -> Any:
    """DCP's file writer, loading each tensor serially (`.cpu()` where it is on a GPU) without CUDA calls
    of its own.

    Its default, whenever CUDA is available, is a loader that copies ahead on a CUDA stream made in
    the writing thread, whose current device is GPU 0 on every rank: a CUDA context on GPU 0 per other
    rank (0.3-0.5 GB each), and a failed save on GPUs in exclusive mode. An asynchronous save's state
    is already on the CPU when written, so overlapping its copies gains nothing."""
    from torch.distributed.checkpoint import FileSystemWriter

    return FileSystemWriter(path, per_thread_copy_ahead=0)  # 0 selects the serial CPU loader


def _publish(tmp: Path, final: Path, head: dict[str, Any], on_written: Callable[[Path, str, dict[str, str]], None]) -> None:
    from nanogpt.fileio import atomic_open

    with atomic_open(tmp / STATE_FILE, "wb") as f:
        torch.save(head, f)
    for entry in os.scandir(tmp):  # DCP syncs its own files; make sure of all of them, and the folder
        with open(entry.path, "rb") as f:
            os.fsync(f.fileno())
    fsync_dir(tmp)
    digest, files = directory_digest(tmp)
    if final.exists():
        # the same iteration saved again (a resume interrupted at once): set the old one aside first
        old = final.with_name(f".{final.name}.old.tmp")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, final)
    fsync_dir(final.parent)
    on_written(final, digest, files)
