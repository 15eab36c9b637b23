"""The process's place in a (possibly distributed) job, read once from the environment.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous variables; a plain `python -m
nanogpt.run` has none of them and is a world of one. Everything else in the product asks a
`DistEnv` instead of reading the environment itself.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from typing import Any

import attrs
import torch
import torch.distributed as dist

from nanogpt.training import hardware
from nanogpt.config.tables import SystemSpec
from nanogpt.errors import InputError


@attrs.frozen
class DistEnv:
    """Rank, world size, device and precision of this process."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    dtype: torch.dtype
    """Autocast precision (float32 means no autocast)."""
    control: Any = None
    """A gloo process group for small control messages (stop flags) that must not touch the GPU stream."""
    patient: Any = None
    """A gloo process group whose collectives wait for days: the other ranks wait on it while rank 0
    prepares the data (downloading and tokenizing OpenWebText takes longer than any collective timeout)."""
    checkpoints: Any = None
    """Under fsdp, a gloo process group of its own for DCP's checkpoint collectives: an asynchronous
    save runs them on a background thread while training runs its own on the default group."""
    group_of_one: bool = False
    """A process group of one process, made because FSDP and DCP need one even without torchrun."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def device_type(self) -> str:
        return self.device.type

    @classmethod
    def from_env(cls, system: SystemSpec, environ: dict[str, str] | None = None) -> DistEnv:
        """Read torchrun's variables, pick the device and dtype, and join the process group."""
        env = os.environ if environ is None else environ
        world_size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", "0"))
        device = pick_device(system.device, local_rank if world_size > 1 else None, world_size)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        control = patient = checkpoints = None
        sharded = system.parallel == "fsdp"
        group_of_one = sharded and world_size == 1 and not dist.is_initialized()
        if (world_size > 1 or group_of_one) and not dist.is_initialized():
            backend = system.backend if system.backend != "auto" else ("nccl" if device.type == "cuda" else "gloo")
            dist.init_process_group(
                backend=backend,
                device_id=device if backend == "nccl" else None,
                timeout=datetime.timedelta(minutes=system.collective_timeout_minutes),
                # a job of one needs no rendezvous: an in-process store, no port to find
                **({"store": dist.HashStore(), "rank": 0, "world_size": 1} if group_of_one else {}),
            )
        if world_size > 1:
            control = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else dist.group.WORLD
            patient = dist.new_group(backend="gloo", timeout=PATIENT_TIMEOUT)
        if sharded:
            checkpoints = dist.new_group(backend="gloo")
        return cls(rank, local_rank, world_size, device, pick_dtype(system.dtype, device), control, patient,
                   checkpoints, group_of_one)

    # -------------------------------------------------------------------- collectives

    def any_rank(self, flag: bool) -> bool:
        """True if `flag` is true on any rank (over the control group, never syncing the GPU)."""
        if not self.distributed:
            return flag
        t = torch.tensor([1 if flag else 0], dtype=torch.int32)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return bool(t.item())

    def wait_for_main(self) -> None:
        """Every rank waits here until rank 0 arrives, however long it takes (see `patient`)."""
        if self.distributed:
            dist.barrier(group=self.patient)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum of a tensor over ranks (in place on the tensor's device)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def close(self, barrier: bool = True) -> None:
        """Leave the process group; with `barrier`, only once every rank is done with it."""
        if (self.distributed or self.group_of_one) and dist.is_initialized():
            if barrier:
                self.wait_for_main()  # rank 0 may still be writing its last checkpoint
            dist.destroy_process_group()


PATIENT_TIMEOUT = datetime.timedelta(days=7)


def pick_device(name: str, local_rank: int | None, world_size: int = 1, setting: str = "system.device") -> torch.device:
    """The device `name` says for this process (under torchrun, cuda:LOCAL_RANK); `setting` is what
    named it (a spec's system.device, a verb's --device), for the errors.

    InputError for a device this machine does not have, and for "cuda:N" in a job of several
    processes: every one of them would take GPU N (NCCL then fails, or the ranks share it).
    """
    from nanogpt.errors import InputError

    spelled = name
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda:") and world_size > 1:
        raise InputError(
            f"{setting} = {spelled!r} would put all {world_size} processes of this job on one GPU; use "
            "\"cuda\" or \"auto\" (each process takes the GPU of its LOCAL_RANK) and choose the GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    if name == "cuda":
        # an explicit index: torch.cuda.set_device and DDP's device_ids both need one
        name = f"cuda:{local_rank if local_rank is not None else 0}"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{setting} is {spelled!r} but this machine has no CUDA device (use \"auto\" or \"cpu\")")
        count = torch.cuda.device_count()
        if device.index >= count:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            shown = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
            who = f"LOCAL_RANK {local_rank} needs" if local_rank is not None and spelled in ("auto", "cuda") else f"{setting} = {spelled!r} names"
            raise InputError(
                f"{who} GPU {device.index}, but this process sees {count} GPU{'s' * (count != 1)}{shown}: "
                "start no more processes per node than it has GPUs (torchrun --nproc_per_node)"
            )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"{setting} is 'mps' but MPS is not available here")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """The training precision system.dtype names; "auto" is bfloat16 wherever the hardware computes it."""
    if name == "auto":
        if device.type == "cuda":
            # bf16 that the GPU only emulates (V100, T4) is slow: those take float16 and a scaler
            return torch.bfloat16 if _cuda_computes_bf16() else torch.float16
        if device.type == "cpu" and hardware.cpu_has_native_bf16():
            # the quickstart trains 1.8x faster per step to the same loss (benchmarks/README.md)
            return torch.bfloat16
        return torch.float32  # emulated bf16 (and MPS autocast) is no faster than float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _cuda_computes_bf16() -> bool:
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # a torch that does not count emulation at all
        return torch.cuda.is_bf16_supported()


def pick_device_and_autocast(device: str, dtype: str) -> tuple[torch.device, Any]:
    """The `--device` ("auto": cuda if available, else cpu) and an autocast context for `--dtype`."""
    from nanogpt.training.dist import pick_device, pick_dtype
    from nanogpt.config.tables import DEVICE

    if not re.fullmatch(DEVICE.regex, device):
        raise InputError(f"--device must be {DEVICE.means} (got {device!r})")
    dev = pick_device(device, None, setting="--device")
    precision = pick_dtype(dtype, dev)
    if precision == torch.float32:
        return dev, contextlib.nullcontext()
    return dev, torch.autocast(device_type=dev.type, dtype=precision)
