"""The run directory and its manifest.json: the record of everything that went into a run.

A run directory is made whole or not at all (built under a temporary name, then renamed), and
its manifest is rewritten atomically as the run goes, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError
from nanogpt.fileio import NotRegularFile, atomic_write_text, make_dirs, read_regular_bytes
from nanogpt.runs.environment import git_info
from nanogpt.runs.runlock import RunLock
from nanogpt.config.tables import Experiment
from nanogpt.config.load import SpecOrigin
from nanogpt.config.canonical import resolved, spec_sha256, to_toml

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
SPEC = "spec.toml"
METRICS = "metrics.jsonl"
GIT_DIFF = "git.diff"
MAX_SAVED_DIFF = 1 << 20  # a bigger uncommitted diff is hashed but not copied


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


def extends_record(exp: Experiment, origin: SpecOrigin) -> dict[str, Any]:
    """What the spec changes relative to the files it extends: the value they gave (None: the
    default) against the one the run used, for each value the spec itself or an override set."""
    from nanogpt.config.dotted import flatten

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
    from nanogpt.config.dotted import under
    from nanogpt.config.load import DEFAULT

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
    """A run directory with its manifest held in memory and written atomically on `save()`.

    The process that creates or reopens one for writing holds its lock (`lock`) until the run ends.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], lock: RunLock | None = None):
        self.path = path
        self.manifest = manifest
        self.lock = lock
        self._writing = threading.RLock()  # the checkpoint writer's thread records checkpoints too; a signal handler may finish the run

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
        make_dirs(parent, f"logging.out_dir {exp.logging.out_dir!r}")
        staging = parent / f".{run_id}.tmp-{secrets.token_hex(3)}"
        try:
            staging.mkdir()
        except OSError as e:  # a directory that exists but cannot be written
            raise InputError(f"logging.out_dir {exp.logging.out_dir!r}: cannot create a run directory in {str(parent)!r}: {e.strerror or e}") from None
        lock = None
        try:
            lock = RunLock.acquire(staging)  # held from before the directory has its final name
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
                "failure": None,
            }
            (staging / SPEC).write_text(to_toml(exp), encoding="utf-8")
            if diff is not None and len(diff) <= MAX_SAVED_DIFF:
                (staging / GIT_DIFF).write_text(diff, encoding="utf-8")
            run = cls(staging, manifest, lock)
            run.save()
            staging.rename(final)
        except BaseException:
            if lock is not None:
                lock.release()
            shutil.rmtree(staging, ignore_errors=True)
            raise
        run.path = final
        return run

    @classmethod
    def open(cls, path: str | os.PathLike[str], lock: RunLock | None = None) -> RunDir:
        path = Path(path)
        manifest = read_manifest(path / MANIFEST)
        return cls(path, manifest, lock)

    def save(self) -> None:
        with self._writing:
            atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=2, allow_nan=True) + "\n")

    def set(self, key: str, value: Any) -> None:
        """One key of the manifest, saved."""
        with self._writing:
            self.manifest[key] = value
        self.save()

    def record_checkpoint(self, entry: dict[str, Any], keep: int) -> None:
        """List a checkpoint that is complete on disk, prune the ones no longer kept, and save."""
        from nanogpt.checkpoints.catalog import prune

        with self._writing:
            entries = [e for e in self.manifest["checkpoints"] if e["step"] != entry["step"]] + [entry]
            self.manifest["checkpoints"] = prune(self.path, entries, keep=keep)
        self.save()

    def finish(self, status: str, error: str | None = None, failure: str | None = None) -> None:
        """Record how the run ended; `failure` says what kind ("nonfinite", "error", "lost_peer")."""
        with self._writing:
            self.manifest["status"] = status
            self.manifest["finished_at"] = now_iso()
            if error is not None:
                self.manifest["error"] = error
            self.manifest["failure"] = failure
        self.save()

    def release(self) -> None:
        """Give up the run's lock (the run is over)."""
        if self.lock is not None:
            self.lock.release()


class RunRecord:
    """The one writer of a run's manifest keys: the run's start or resume, its checkpoints, its
    metrics and how it ended. The loop says what happened; this says how the record shows it.

    Rank 0 holds the run directory (`run`); every other rank holds a record of the same `path`
    whose methods write nothing, except `fail`, since a rank that fails records its own error.
    """

    def __init__(self, path: Path, run: RunDir | None = None):
        self.path = path
        self.run = run

    @classmethod
    def start(cls, exp: Experiment, origin: SpecOrigin, sections: dict[str, Any], run_id: str | None = None) -> RunRecord:
        """A new run directory with a `running` manifest (`sections`: env, hardware, data, model, ...)."""
        run = RunDir.create(exp, origin, sections, run_id)
        return cls(run.path, run)

    @classmethod
    def resume(
        cls, exp: Experiment, origin: SpecOrigin, sections: dict[str, Any], run_dir: Path, lock: RunLock | None,
        checkpoint: Path | None, checkpoints: list[dict[str, Any]],
    ) -> RunRecord:
        """Reopen a run to continue it from `checkpoint` (None: from iteration 0), `running` again."""
        run = RunDir.open(run_dir, lock)
        m = run.manifest
        m.update(sections)
        m["spec"] = resolved(exp)
        m["spec_sha256"] = spec_sha256(exp)
        m["provenance"] = resumed_provenance(m.get("provenance"), exp, origin)
        m.setdefault("resumes", []).append(
            {"at": now_iso(), "overrides": list(origin.overrides), "command": " ".join(sys.argv),
             "from_checkpoint": str(checkpoint.relative_to(run_dir)) if checkpoint else None}
        )
        m["checkpoints"] = checkpoints
        m["status"] = "running"
        m["finished_at"] = None
        m["error"] = None
        m["failure"] = None
        if checkpoint is None:
            m["metrics"] = {}
        atomic_write_text(run.path / SPEC, to_toml(exp))
        run.save()
        return cls(run.path, run)

    @property
    def lock(self) -> RunLock | None:
        return self.run.lock if self.run is not None else None

    def get(self, key: str, default: Any = None) -> Any:
        """A key of the manifest as rank 0 holds it (`default` on the other ranks)."""
        return self.run.manifest.get(key, default) if self.run is not None else default

    def checkpointed(self, path: Path, step: int, sha256: str, val_loss: float | None, keep: int,
                     files: dict[str, str] | None = None) -> None:
        """A checkpoint is complete on disk: list it and prune those no longer kept. A sharded one's
        `sha256` is of its file listing, and `files` the sha256 of each file in it."""
        if self.run is not None:
            entry = {"path": str(path.relative_to(self.run.path)), "step": step, "sha256": sha256, "val_loss": val_loss}
            self.run.record_checkpoint({**entry, "files": files} if files is not None else entry, keep)

    def last_checkpoint(self) -> dict[str, Any] | None:
        entries = self.get("checkpoints")
        return max(entries, key=lambda e: e["step"]) if entries else None

    def progress(self, *, iteration: int, tokens_seen: int, wall_seconds: float, metrics: dict[str, Any]) -> None:
        """Where the run stands: the manifest's `metrics`."""
        if self.run is None:
            return
        self.run.manifest["metrics"] = {
            "iter": iteration,
            "tokens_seen": tokens_seen,
            **{key: metrics.get(key) for key in (
                "train_loss", "val_loss", "best_val_loss", "train_perplexity", "val_perplexity", "tokens_per_sec", "mfu")},
            "wall_seconds": wall_seconds,
            # the latest figures of the [evaluation] tasks: eval/<task>/acc, eval/<task>/acc_norm
            **{key: value for key, value in metrics.items() if key.startswith("eval/")},
        }
        self.run.save()

    def trackers(self, records: dict[str, dict[str, Any]]) -> None:
        """The manifest's `trackers`: for each tracker this session started, its `status` ("ok" or
        "failed"), `error` and its own run id, which a resumed run continues. A tracker an earlier
        session had, and this one does not name, keeps its entry."""
        if self.run is not None:
            before = self.run.manifest.get("trackers")
            self.run.set("trackers", {**(before if isinstance(before, dict) else {}), **records})

    def finish(self, status: str, error: str | None = None, failure: str | None = None) -> None:
        """How the run ended; `failure` says what kind ("nonfinite", "error", "lost_peer")."""
        if self.run is not None:
            self.run.finish(status, error, failure)

    def fail(self, message: str, *, lost_peer: bool, distributed: bool, progress: dict[str, Any] | None = None) -> None:
        """Record a failure from any rank, and where the run stood (`progress`: the arguments of
        `progress`), never raising: the error being handled is what matters."""
        failure = "lost_peer" if lost_peer else "error"
        if self.run is not None:
            if lost_peer:
                # rank 0 failed only because another rank did (its collective lost a peer): give
                # that rank a moment to record its own error, and report that one first (before
                # this rank writes the manifest again)
                root_cause = self._peer_failure(wait_seconds=5.0)
                if root_cause:
                    message = f"{root_cause} (then {message})"
            if progress is not None:
                with contextlib.suppress(Exception):
                    self.progress(**progress)
            with contextlib.suppress(Exception):
                self.run.finish("failed", message, failure=failure)
        elif distributed:
            # a rank other than 0 records its own failure: rank 0 may be stuck waiting for it
            with contextlib.suppress(Exception):
                RunDir.open(self.path).finish("failed", message, failure=failure)

    def _peer_failure(self, wait_seconds: float) -> str | None:
        deadline = time.time() + wait_seconds
        while True:
            with contextlib.suppress(InputError):
                on_disk = read_manifest(self.path / MANIFEST)
                error = on_disk.get("error") or ""
                if on_disk.get("status") == "failed" and error.startswith("rank ") and not error.startswith("rank 0:"):
                    return error
            if time.time() > deadline:
                return None
            time.sleep(0.1)


def _command() -> str:
    import shlex

    argv = getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv]
    return shlex.join(argv)


class ManifestError(InputError):
    """A manifest that cannot be read: missing, truncated, or not this product's."""


MAX_MANIFEST_BYTES = 64 << 20
"""A manifest is tens of kB; anything this big is not one, and is not read into memory."""


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A manifest's contents; a clear ManifestError for a missing, truncated or foreign file.

    Never blocks: a FIFO, a device or a directory named manifest.json is refused unread.
    """
    path = Path(path)
    try:
        text = read_regular_bytes(path, MAX_MANIFEST_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{str(path)!r} does not exist") from None
    except NotRegularFile:
        raise ManifestError(f"{str(path)!r} is not a regular file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"cannot read {str(path)!r}: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{str(path)!r} is not valid JSON (truncated?): {e}") from None
    except RecursionError:
        raise ManifestError(f"{str(path)!r} nests too deeply to be a manifest") from None
    if not isinstance(data, dict) or "schema_version" not in data or "spec" not in data:
        raise ManifestError(f"{str(path)!r} is not a nanogpt run manifest")
    return data


# ---------------------------------------------------------------------------------- resume


def load_for_resume(run_dir: Path, overrides: list[str], force: bool) -> tuple[Experiment, SpecOrigin]:
    """The spec a stopped run continues with: its spec.toml plus overrides that cannot change the weights.

    Overrides that would change the training are refused with the list of changes, unless forced.
    """
    from nanogpt.config.load import load_spec

    if not (run_dir / SPEC).is_file():
        raise InputError(f"{str(run_dir)!r} is not a run directory (no {SPEC})")
    manifest = read_manifest(run_dir / MANIFEST)
    exp, origin = load_spec(run_dir / SPEC, overrides, check_files=False)
    changed = training_changes(manifest["spec"], resolved(exp))
    if changed and not force:
        lines = "\n".join(f"  spec.{path}: {shown_value(a)} -> {shown_value(b)}" for path, a, b in changed)
        raise InputError(
            f"refusing to resume {str(run_dir)!r}: these changes would alter the training "
            f"(pass --force to resume anyway):\n{lines}"
        )
    return exp, origin


def training_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(path, old, new) for every spec leaf that differs and can change the weights.

    `old` is a recorded spec (a manifest's, a checkpoint's): it is read as today's classes read it,
    so a field added since it was written is its default, not a change."""
    from nanogpt.config.canonical import as_read_today
    from nanogpt.config.dotted import RESUMABLE_FIELDS, diff_data, under

    return [d for d in diff_data(as_read_today(old), new) if not under(d[0], RESUMABLE_FIELDS)]


def shown_value(value: Any) -> str:
    """A spec value in a list of changes; a path one side lacks shows as `(absent)`."""
    from nanogpt.config.dotted import MISSING

    return "(absent)" if value is MISSING else repr(value)


def find_resumable(exp: Experiment) -> tuple[Path, RunLock] | None:
    """The newest unfinished run `train.auto_resume` continues, with its lock now held; or None.

    A candidate is a run dir under `<out_dir>/<name>/` whose manifest has the same name and the
    same spec up to the fields a resume may change, and which did not complete or stop on a
    non-finite loss (that would only fail again). `running` counts: a run whose process died
    (SIGKILL, a lost node, a requeue) never said otherwise. A run a live process holds is skipped.
    """
    parent = Path(exp.logging.out_dir) / exp.name
    if not parent.is_dir():
        return None
    spec = resolved(exp)
    candidates = []
    for run_dir in parent.iterdir():
        if run_dir.name.startswith(".") or not run_dir.is_dir():
            continue
        try:
            manifest = read_manifest(run_dir / MANIFEST)
        except InputError:
            continue
        if manifest.get("name") != exp.name or manifest.get("status") == "completed":
            continue
        if manifest.get("status") == "failed" and manifest.get("failure") == "nonfinite":
            continue
        if not isinstance(manifest.get("spec"), dict) or training_changes(manifest["spec"], spec):
            continue
        candidates.append((_created_timestamp(manifest), run_dir.name, run_dir))
    for _, _, run_dir in sorted(candidates, reverse=True):
        lock = RunLock.try_acquire(run_dir)
        if lock is None:
            continue  # a live process is training it
        try:
            still_unfinished = read_manifest(run_dir / MANIFEST).get("status") != "completed"
        except InputError:
            still_unfinished = False
        if still_unfinished:  # (it may have completed while we looked)
            return run_dir, lock
        lock.release()
    return None


def _created_timestamp(manifest: dict[str, Any]) -> float:
    try:
        return datetime.datetime.fromisoformat(manifest["created_at"]).timestamp()
    except (KeyError, TypeError, ValueError):
        return 0.0
