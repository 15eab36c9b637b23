"""The run directory and its manifest.json: the record of everything that went into a run.

A run directory is made whole or not at all (built under a temporary name, then renamed), and
its manifest is rewritten atomically as the run goes, so a reader never sees half a file.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError
from nanogpt.fileio import atomic_write_text
from nanogpt.spec import Experiment, SpecOrigin, resolved, spec_sha256, to_toml

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPEC = "spec.toml"
METRICS = "metrics.jsonl"
GIT_DIFF = "git.diff"
MAX_SAVED_DIFF = 1 << 20  # a bigger uncommitted diff is hashed but not copied

PACKAGES = ("numpy", "tiktoken", "datasets", "transformers", "attrs", "cattrs", "tensorboard", "tomli-w", "nanogpt")


def now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).astimezone().isoformat(timespec="seconds")


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def refuse_existing_run_dir(exp: Experiment) -> None:
    """Before any work: a spec naming its run id (`logging.run_id`) must not name a run that exists.

    A run's spec.toml keeps the id the run had, so running it again lands here; the message says
    how to continue that run, or repeat it under another id.
    """
    if exp.logging.run_id is not None:
        path = Path(exp.logging.out_dir) / exp.name / exp.logging.run_id
        if path.exists():
            raise InputError(existing_run_message(path, exp.logging.run_id))


def existing_run_message(path: Path, run_id: str) -> str:
    return (
        f"run directory {str(path)!r} exists already (logging.run_id = {run_id!r}). Continue that run with "
        f"`nanogpt run --resume {path}`, or repeat it under another id: add logging.run_id=NEW, or "
        f"logging.run_id= (nothing after '=') for a new timestamped one"
    )


# ------------------------------------------------------------------------ what went in


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
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
        except OSError:
            pass
        return platform.processor() or platform.machine()
    return device.type


def extends_record(exp: Experiment, origin: SpecOrigin) -> dict[str, Any]:
    """What the spec changes relative to the files it extends: the value they gave (None: the
    default) against the one the run used, for each value the spec itself or an override set."""
    from nanogpt.spec.diff import flatten

    changes = []
    for path, value in flatten(resolved(exp)).items():
        source = origin.source_of(path)
        if source not in (origin.path,) and not source.startswith("override"):
            continue
        before = origin.extended.get(path)
        if path in origin.extended and before == value:
            continue
        changes.append({"path": path, "extended": before, "value": value, "source": source})
    return {"files": list(origin.files[1:]), "changes": changes}


def provenance_record(exp: Experiment, origin: SpecOrigin) -> dict[str, str]:
    """Every leaf of the resolved spec -> where its value came from ("default" when nowhere)."""
    out = {}

    def walk(data: dict[str, Any], prefix: str) -> None:
        for key, value in data.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, path + ".")
            else:
                out[path] = origin.source_of(path)

    walk(resolved(exp), "")
    return out


def resumed_provenance(previous: Any, exp: Experiment, origin: SpecOrigin) -> dict[str, str]:
    """The provenance after `run --resume RUN_DIR key=value ...`: what the run had recorded, with
    every value the resume's overrides set marked as theirs ("override key=value (--resume)")."""
    from nanogpt.spec.diff import under
    from nanogpt.spec.load import DEFAULT

    # a component's `kind` given anew replaces its whole table
    touched = tuple(
        key.removesuffix("kind") if key.endswith(".kind") else key
        for key in (word.partition("=")[0].strip() for word in origin.overrides)
    )
    previous = previous if isinstance(previous, dict) else {}
    out = {}
    for path, source in provenance_record(exp, origin).items():
        if under(path, touched):
            out[path] = source if source == DEFAULT else f"{source} (--resume)"
        else:
            out[path] = previous.get(path, source)
    return out


# ----------------------------------------------------------------------------- the run dir


class RunDir:
    """A run directory with its manifest held in memory and written atomically on `save()`."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest

    @classmethod
    def create(
        cls, exp: Experiment, origin: SpecOrigin, sections: dict[str, Any], run_id: str | None = None
    ) -> RunDir:
        """Make `<out_dir>/<name>/<run_id>/` with spec.toml and a `running` manifest, all or nothing."""
        run_id = run_id or exp.logging.run_id or new_run_id()
        parent = Path(exp.logging.out_dir) / exp.name
        final = parent / run_id
        if final.exists():
            raise InputError(existing_run_message(final, run_id))
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{run_id}.tmp-{secrets.token_hex(3)}"
        staging.mkdir()
        try:
            git, diff = git_info()
            manifest = {
                "schema_version": SCHEMA_VERSION,
                "name": exp.name,
                "run_id": run_id,
                "status": "running",
                "spec": resolved(exp),
                "spec_sha256": spec_sha256(exp),
                "spec_files": list(origin.files),
                "overrides": list(origin.overrides),
                "provenance": provenance_record(exp, origin),
                "extends": extends_record(exp, origin),
                "command": _command(),
                "created_at": now_iso(),
                "finished_at": None,
                "git": git,
                **sections,
                "metrics": {},
                "checkpoints": [],
                "error": None,
            }
            (staging / SPEC).write_text(to_toml(exp), encoding="utf-8")
            if diff is not None and len(diff) <= MAX_SAVED_DIFF:
                (staging / GIT_DIFF).write_text(diff, encoding="utf-8")
            run = cls(staging, manifest)
            run.save()
            staging.rename(final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        run.path = final
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunDir:
        path = Path(path)
        manifest = read_manifest(path / MANIFEST)
        return cls(path, manifest)

    def save(self) -> None:
        atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=2, allow_nan=True) + "\n")

    def update(self, **fields: Any) -> None:
        self.manifest.update(fields)
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.manifest["status"] = status
        self.manifest["finished_at"] = now_iso()
        if error is not None:
            self.manifest["error"] = error
        self.save()


def _command() -> str:
    import shlex

    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


class ManifestError(InputError):
    """A manifest that cannot be read: missing, truncated, or not this product's."""


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A manifest's contents; a clear ManifestError for a missing, truncated or foreign file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {str(path)!r}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{str(path)!r} is not valid JSON (truncated?): {e}") from None
    if not isinstance(data, dict) or "schema_version" not in data or "spec" not in data:
        raise ManifestError(f"{str(path)!r} is not a nanogpt run manifest")
    return data


# ---------------------------------------------------------------------------------- resume


def load_for_resume(run_dir: Path, overrides: list[str], force: bool) -> tuple[Experiment, SpecOrigin]:
    """The spec a stopped run continues with: its spec.toml plus overrides that cannot change the weights.

    Overrides that would change the training are refused with the list of changes, unless forced.
    """
    from nanogpt.spec import load_spec

    if not (run_dir / SPEC).is_file():
        raise InputError(f"{str(run_dir)!r} is not a run directory (no {SPEC})")
    manifest = read_manifest(run_dir / MANIFEST)
    exp, origin = load_spec(run_dir / SPEC, overrides, check_files=False)
    changed = training_changes(manifest["spec"], resolved(exp))
    if changed and not force:
        lines = "\n".join(f"  spec.{path}: {a!r} -> {b!r}" for path, a, b in changed)
        raise InputError(
            f"refusing to resume {str(run_dir)!r}: these changes would alter the training "
            f"(pass --force to resume anyway):\n{lines}"
        )
    return exp, origin


def training_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, old, new) for every spec leaf that differs and can change the weights."""
    from nanogpt.spec.diff import RESUMABLE_FIELDS, diff_data, under

    return [d for d in diff_data(old, new) if not under(d[0], RESUMABLE_FIELDS)]
