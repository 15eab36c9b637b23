"""What a run records of where it ran: the git commit and diff, the packages, the machine, the device."""

from __future__ import annotations
import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any


PACKAGES = ("numpy", "tiktoken", "datasets", "transformers", "attrs", "cattrs", "tensorboard", "tomli-w", "nanogpt")


def git_info(cwd: str | os.PathLike[str] = ".") -> tuple[dict[str, Any], str | None]:
    """The commit, dirty flag and hash of the uncommitted diff of the repository around `cwd`.

    Returns the record and the diff text (None when clean or not a repository).
    """

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.decode("utf-8", "replace")

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}, None
    status = git("status", "--porcelain", "--untracked-files=no") or ""
    diff = git("diff", "HEAD", "--no-color", "--no-ext-diff") or ""
    dirty = bool(status.strip())
    return {
        "commit": commit.strip(),
        "dirty": dirty,
        "diff_sha256": hashlib.sha256(diff.encode("utf-8")).hexdigest() if dirty else None,
    }, (diff if dirty else None)


def env_info() -> dict[str, Any]:
    import torch

    packages = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    cuda = torch.version.cuda
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda and torch.cuda.is_available() else None,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "packages": packages,
    }


def device_name(device: Any) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        from nanogpt.runs.environment import cpu_model

        return cpu_model()
    return device.type


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo's), or what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
