"""A sweep's record: `<out_dir>/<name>/sweeps/<sweep_id>/sweep.json`.

sweep.json is rewritten atomically (tmp -> fsync -> rename) under an exclusive lock of the sweep
dir, so any number of processes (a sweep's own, or a job array's tasks each running one member)
may update it: each update reads the file, changes it, and writes it back before the next one
reads. Readers that take no lock still see a whole file.

Each member also has `logs/<index>.log` in the sweep dir: its output, and, locked for as long as a
process runs that member, the proof that one does (the kernel drops the lock when it dies).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

from nanogpt.errors import InputError
from nanogpt.fileio import NotRegularFile, atomic_write_text, read_regular_bytes
from nanogpt.runs.manifest import now_iso

SCHEMA_VERSION = 1
SWEEP_JSON = "sweep.json"
SWEEPS = "sweeps"
LOCK = ".lock"
LOGS = "logs"
MAX_SWEEP_JSON_BYTES = 256 << 20

STATUSES = ("running", "completed", "failed", "interrupted")
"""A sweep's, and (with `pending`) a member's."""


def sweep_dir_for(out_dir: str, name: str, sweep_id: str) -> Path:
    return Path(out_dir) / name / SWEEPS / sweep_id


def derive_status(members: list[dict[str, Any]]) -> str:
    """The sweep's status from its members': completed only when all are; running while any runs or
    waits to start; then interrupted, then failed."""
    statuses = {m.get("status") for m in members}
    if statuses <= {"completed"}:
        return "completed"
    if statuses & {"running", "pending"}:
        return "running"
    return "interrupted" if "interrupted" in statuses else "failed"


class SweepRecord:
    """The sweep dir and its sweep.json."""

    def __init__(self, directory: str | os.PathLike[str]):
        self.dir = Path(directory)

    @property
    def path(self) -> Path:
        return self.dir / SWEEP_JSON

    @property
    def out_dir(self) -> Path:
        """`<out_dir>`: every member's run lies below it (`<out_dir>/<name>/sweeps/<id>`)."""
        return self.dir.parent.parent.parent

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self) -> dict[str, Any]:
        """sweep.json's contents; InputError (exit 2) for a missing, truncated or foreign file."""
        try:
            text = read_regular_bytes(self.path, MAX_SWEEP_JSON_BYTES).decode("utf-8")
        except FileNotFoundError:
            raise InputError(f"{str(self.dir)!r} is not a sweep directory (no {SWEEP_JSON})") from None
        except NotRegularFile:
            raise InputError(f"{str(self.path)!r} is not a regular file") from None
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read {str(self.path)!r}: {e}") from None
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            raise InputError(f"{str(self.path)!r} is not valid JSON (truncated?): {e}") from None
        if not _is_record(data):
            raise InputError(f"{str(self.path)!r} is not a nanogpt sweep record")
        return data

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the sweep dir's lock (blocking: updates are quick)."""
        import fcntl

        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # drops the lock

    def update(self, change: Callable[[dict[str, Any] | None], dict[str, Any]]) -> dict[str, Any]:
        """Read sweep.json (None when there is none yet), apply `change`, write the result, all under the lock."""
        with self.locked():
            data = change(self.read() if self.exists() else None)
            # `interrupted`, set when the process running the sweep was stopped, stays until a member runs again
            if data.get("status") != "interrupted" or any(m["status"] == "running" for m in data["members"]):
                data["status"] = derive_status(data["members"])
            data["updated_at"] = now_iso()
            atomic_write_text(self.path, json.dumps(data, indent=2, allow_nan=True) + "\n")
            return data

    def update_member(self, index: int, **fields: Any) -> dict[str, Any]:
        def change(data: dict[str, Any] | None) -> dict[str, Any]:
            assert data is not None
            data["members"][index].update(fields)
            return data

        return self.update(change)

    def mark(self, status: str) -> dict[str, Any]:
        """Set the sweep's own status (`interrupted` when the process running it was stopped)."""

        def change(data: dict[str, Any] | None) -> dict[str, Any]:
            assert data is not None
            data["status"] = status
            return data

        return self.update(change)

    # ----------------------------------------------------------------- run dirs

    def run_dir_of(self, member: dict[str, Any]) -> Path | None:
        """A member's run dir (recorded relative to the sweep dir), if it lies within the sweep's out_dir."""
        relative = member.get("run_dir")
        if not isinstance(relative, str) or not relative or "\x00" in relative or os.path.isabs(relative):
            return None
        candidate = Path(os.path.normpath(self.dir / relative))
        base = Path(os.path.normpath(self.out_dir))
        return candidate if candidate != base and candidate.is_relative_to(base) else None

    def relative(self, run_dir: Path) -> str:
        return os.path.relpath(run_dir, self.dir)

    # ---------------------------------------------------------------- member logs

    def open_log(self, index: int) -> IO[str] | None:
        """Member `index`'s log, opened to append and locked; None when another process holds it."""
        import fcntl

        (self.dir / LOGS).mkdir(parents=True, exist_ok=True)
        log = open(self.dir / LOGS / f"{index}.log", "a", encoding="utf-8")  # noqa: SIM115 - kept open while the member runs
        try:
            fcntl.flock(log.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.close()
            return None
        return log

    def log_path(self, index: int) -> Path:
        return self.dir / LOGS / f"{index}.log"


def _is_record(data: Any) -> bool:
    return (
        isinstance(data, dict) and "schema_version" in data and isinstance(data.get("members"), list)
        and all(isinstance(m, dict) and isinstance(m.get("index"), int) and isinstance(m.get("status"), str)
                for m in data["members"])
        and [m["index"] for m in data["members"]] == list(range(len(data["members"])))
    )


# ------------------------------------------------------------------------- membership


@attrs.frozen
class SweepMembership:
    """What `nanogpt sweep` tells the `nanogpt run` of one member (`run --sweep-member JSON`)."""

    id: str
    """The sweep's id."""
    index: int
    """The member's place in the sweep, from 0."""
    values: dict[str, Any] = attrs.field(eq=False)
    """Swept key -> this member's value."""
    run_id: str
    """The member's run directory name, chosen by the sweep so that it knows where the run is."""

    def to_json(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SweepMembership:
        """Read `--sweep-member`'s JSON; InputError (exit 2) saying what is wrong."""
        from nanogpt.config.checks import SAFE_NAME

        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"--sweep-member: not valid JSON ({e})") from None
        if not isinstance(data, dict) or set(data) != {"id", "index", "values", "run_id"}:
            raise InputError('--sweep-member must be a JSON object with "id", "index", "values" and "run_id"')
        if not isinstance(data["index"], int) or isinstance(data["index"], bool) or data["index"] < 0:
            raise InputError(f"--sweep-member: index must be an integer >= 0 (got {data['index']!r})")
        if not isinstance(data["values"], dict):
            raise InputError("--sweep-member: values must be an object of dotted key -> value")
        for key in ("id", "run_id"):
            if not isinstance(data[key], str):
                raise InputError(f"--sweep-member: {key} must be a string (got {data[key]!r})")
            try:
                SAFE_NAME(None, None, data[key])
            except (ValueError, TypeError) as e:
                raise InputError(f"--sweep-member: {key} {e}") from None
        return cls(**data)

    def manifest_record(self) -> dict[str, Any]:
        """The manifest's `sweep` key."""
        return {"id": self.id, "index": self.index, "values": self.values}
