"""A sweep's members as `nanogpt run` processes: N at a time, signals forwarded, output kept.

Each member is an ordinary `nanogpt run` in a process of its own, so a member that crashes takes
nothing else down. It runs in its own session: a terminal's Ctrl-C reaches only the sweep, which
forwards it to each running member exactly once (a second SIGINT tells a run to stop without
saving, so the member must not get the terminal's copy as well). On a CPU each of the N slots
gets its share of the cores (OMP threads and CPU affinity); with `--gpus-per-run K` each slot gets
K GPUs of its own through CUDA_VISIBLE_DEVICES, and torchrun starts a member that has more than one.
Output goes to the console, each line after `[index] `, and to the member's log in the sweep dir.

What a member needs is decided when a slot is free for it, from its run's own manifest: nothing
(completed, or a completed run of the same name has its spec), a resume (`run --resume`: it was
interrupted, killed, or failed on a fault), or a new run.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

from nanogpt.errors import InputError
from nanogpt.runs.manifest import MANIFEST, new_run_id, now_iso, read_manifest
from nanogpt.runs.runlock import describe_holder, is_held
from nanogpt.config.canonical import as_read_today, results_sha256
from nanogpt.config.sweep import Member
from nanogpt.runs.sweeps.record import SweepMembership, SweepRecord

EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.1
TAIL_LINES = 8


@attrs.frozen
class Planned:
    """A validated member: what to launch, and the folder its runs go to."""

    member: Member
    name: str
    """The member's experiment name."""
    run_parent: Path
    """`<out_dir>/<name>`."""
    spec_sha256: str
    results_sha256: str
    """Its spec's hash without the fields that cannot change results (see `results_sha256`)."""


# ------------------------------------------------------------------------------- slots


@attrs.frozen
class Slot:
    """Room for one member at a time: its share of the CPU cores, or its own GPUs."""

    number: int
    cpus: tuple[int, ...] | None = None
    """Cores it is pinned to, and as many OMP threads (None: the whole machine, as a lone run has)."""
    gpus: tuple[str, ...] | None = None
    """CUDA_VISIBLE_DEVICES entries (None: whatever the sweep sees)."""


def build_slots(jobs: int, gpus_per_run: int | None) -> list[Slot]:
    """`jobs` slots: K GPUs each with `--gpus-per-run K`, else on a CPU an equal share of the cores."""
    if gpus_per_run:
        visible = visible_gpus()
        if jobs * gpus_per_run > len(visible):
            raise InputError(
                f"--jobs {jobs} x --gpus-per-run {gpus_per_run} needs {jobs * gpus_per_run} GPUs; "
                f"{len(visible)} {'is' if len(visible) == 1 else 'are'} visible"
            )
        return [Slot(i, gpus=tuple(visible[i * gpus_per_run:(i + 1) * gpus_per_run])) for i in range(jobs)]
    if jobs == 1:
        return [Slot(0)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    share = max(1, len(cores) // jobs)
    return [Slot(i, cpus=tuple(cores[(i * share + j) % len(cores)] for j in range(share))) for i in range(jobs)]


def visible_gpus() -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every one torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    import torch  # only to count them: a sweep on a CPU never gets here

    return [str(i) for i in range(torch.cuda.device_count())]


def member_env(slot: Slot) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if slot.cpus is not None and "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(len(slot.cpus))  # torch's intra-op threads follow it
    if slot.gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(slot.gpus)
    return env


def run_command(args: list[str], slot: Slot) -> list[str]:
    """`nanogpt run ARGS`, under torchrun when the slot has several GPUs."""
    if slot.gpus is not None and len(slot.gpus) > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={len(slot.gpus)}",
                "-m", "nanogpt.run", *args]
    return [sys.executable, "-m", "nanogpt", "run", *args]


# ------------------------------------------------------------------------- one process


class MemberProcess:
    """One running member: its process, and two threads copying its output to the console and its log."""

    def __init__(self, index: int, command: list[str], slot: Slot, log: IO[str], console: threading.Lock):
        self.index, self.slot, self.log = index, slot, log
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self._console = console
        self.proc = subprocess.Popen(
            command, env=member_env(slot), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )
        if slot.cpus is not None:
            with contextlib.suppress(OSError):  # threads the member starts later inherit it
                os.sched_setaffinity(self.proc.pid, slot.cpus)
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, "stderr"), daemon=True),
        ]
        for t in self._pumps:
            t.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        # the member itself, not its group: torchrun forwards to its workers on its own
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signum)

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self) -> int:
        code = self.proc.wait()
        for t in self._pumps:
            t.join()
        with contextlib.suppress(OSError):
            self.log.close()  # drops the member's lock
        return code

    def _pump(self, stream: IO[bytes], name: str) -> None:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace")
            if not line.endswith("\n"):
                line += "\n"
            if name == "stderr" and line.strip():
                self.tail.append(line.rstrip("\n"))
            with self._console:
                with contextlib.suppress(OSError, ValueError):
                    self.log.write(line)
                    self.log.flush()
                console = sys.stdout if name == "stdout" else sys.stderr
                with contextlib.suppress(OSError, ValueError):
                    console.write(f"[{self.index}] {line}")
                    console.flush()
        stream.close()


# ----------------------------------------------------------------------------- the launcher


@attrs.frozen
class Action:
    kind: str
    """"fresh", "resume", "completed" (nothing to do), "reuse" (a completed run has its spec),
    "failed" (it would only fail again) or "busy" (another process runs it)."""
    run_dir: Path | None = None
    note: str = ""


class Launcher:
    """Runs members of one sweep, `len(slots)` at a time, keeping sweep.json up to date."""

    def __init__(self, record: SweepRecord, sweep_id: str, spec: str, planned: list[Planned], slots: list[Slot],
                 *, rerun: bool = False, say: Callable[[str], None] | None = None):
        self.record, self.sweep_id, self.spec, self.planned, self.slots = record, sweep_id, spec, planned, slots
        self.rerun = rerun
        self._say = say or (lambda text: print(f"sweep: {text}", flush=True))
        self.stop: int | None = None
        self._running: dict[int, MemberProcess] = {}
        self._console = threading.Lock()  # whole lines: the members' output is copied by other threads
        self._completed: dict[Path, dict[str, Path]] = {}
        self._busy: set[int] = set()

    # ------------------------------------------------------------------ schedule

    def run(self, indices: list[int]) -> dict[int, str]:
        """Run these members (each when a slot is free); returns index -> final status.

        A signal stops launching and is forwarded to the running members; they save and end
        `interrupted`, and the sweep is marked so.
        """
        queue = collections.deque(indices)
        free = list(self.slots)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        announced = False
        try:
            while queue or self._running:
                while queue and free and self.stop is None:
                    index = queue.popleft()
                    if self._start(self.planned[index], free[0]) is not None:
                        free.pop(0)
                if self.stop is not None and not announced:
                    announced = True
                    self.say(
                        f"{signal.Signals(self.stop).name} received: stopping {len(self._running)} running member(s); "
                        "each saves a checkpoint (Ctrl-C again stops them without saving)"
                    )
                    queue.clear()
                ended = [i for i, p in self._running.items() if p.poll() is not None]
                for index in ended:
                    proc = self._running.pop(index)
                    free.append(proc.slot)
                    free.sort(key=lambda s: s.number)
                    self._finish(self.planned[index], proc)
                if not ended:
                    time.sleep(POLL_SECONDS)
        finally:
            for proc in self._running.values():  # only on an error of the sweep itself: let them save
                proc.signal(signal.SIGINT)
            for index, proc in list(self._running.items()):
                self._finish(self.planned[index], proc)
            self._running.clear()
            for s, handler in previous.items():
                signal.signal(s, handler)
        data = self.record.mark("interrupted") if self.stop is not None else self.record.update(lambda d: d)
        return {i: data["members"][i]["status"] for i in indices}

    def _on_signal(self, signum: int, frame: Any) -> None:
        # only forward here: printing from a handler could re-enter a write of the main thread
        self.stop = self.stop or signum
        for proc in list(self._running.values()):
            proc.signal(signum)

    def say(self, text: str) -> None:
        with self._console:
            self._say(text)

    @property
    def busy(self) -> set[int]:
        """Members left alone because another process runs them."""
        return set(self._busy)

    # ------------------------------------------------------------------ one member

    def _start(self, planned: Planned, slot: Slot) -> MemberProcess | None:
        member = planned.member
        log = self.record.open_log(member.index)
        if log is None:
            self._left_alone(member, "another process is running it (its log is locked)")
            return None
        try:
            action = self._decide(planned)
            if action.kind == "busy":
                self._left_alone(member, action.note)
            elif action.kind in ("completed", "reuse", "failed"):
                status = "failed" if action.kind == "failed" else "completed"
                fields: dict[str, Any] = {"status": status, "run_dir": self.record.relative(action.run_dir)}
                if action.kind == "reuse":
                    fields["reused"] = True
                self.record.update_member(member.index, **fields)
                self.say(f"member {member.index} ({member.label()}): {action.note}")
            if action.kind not in ("fresh", "resume"):
                log.close()
                return None
            return self._launch(planned, action, slot, log)
        except BaseException:
            log.close()
            raise

    def _launch(self, planned: Planned, action: Action, slot: Slot, log: IO[str]) -> MemberProcess:
        member = planned.member
        if action.kind == "resume":
            run_dir = action.run_dir
            args = ["--resume", str(run_dir)]
        else:
            run_id = new_run_id()
            run_dir = planned.run_parent / run_id
            membership = SweepMembership(self.sweep_id, member.index, member.values, run_id)
            args = ["--sweep-member", membership.to_json(), self.spec, *member.overrides]
        command = run_command(args, slot)
        attempts = self.record.read()["members"][member.index].get("attempts", 0)
        self.record.update_member(
            member.index, status="running", run_dir=self.record.relative(run_dir), started_at=now_iso(),
            finished_at=None, exit_code=None, error=None, reused=False, attempts=attempts + 1,
        )
        log.write(f"==== {now_iso()}: {' '.join(command)}\n")
        log.flush()
        verb = "resuming" if action.kind == "resume" else "starting"
        self.say(f"{verb} member {member.index} ({member.label()}) -> {run_dir}")
        proc = MemberProcess(member.index, command, slot, log, self._console)
        self._running[member.index] = proc
        if self.stop is not None:  # a signal came while it started
            proc.signal(self.stop)
        return proc

    def _left_alone(self, member: Member, why: str) -> None:
        self._busy.add(member.index)
        self.say(f"member {member.index} ({member.label()}) is left alone: {why}")

    def _decide(self, planned: Planned) -> Action:
        entry = self.record.read()["members"][planned.member.index]
        run_dir = self.record.run_dir_of(entry)
        manifest = _manifest(run_dir)
        if run_dir is not None and manifest is not None:
            status, failure = manifest.get("status"), manifest.get("failure")
            if status == "completed":
                return Action("completed", run_dir, f"completed already ({run_dir}): left alone")
            if is_held(run_dir):
                return Action("busy", run_dir, f"its run {run_dir} is being written by {describe_holder(run_dir)}")
            if status == "failed" and failure == "nonfinite":
                if not self.rerun:
                    return Action("failed", run_dir, f"its loss was not finite in {run_dir}, and would be again (--rerun trains it anew)")
            else:
                return Action("resume", run_dir)
        if not self.rerun:
            done = self._completed_runs(planned).get(planned.results_sha256)
            if done is not None:
                return Action("reuse", done, f"a completed run has the same spec: {done} (--rerun trains it again)")
        return Action("fresh")

    def _completed_runs(self, planned: Planned) -> dict[str, Path]:
        """results_sha256 -> a completed run of the member's name, from the manifests under `<out_dir>/<name>`."""
        parent = planned.run_parent
        if parent not in self._completed:
            found: dict[str, Path] = {}
            with contextlib.suppress(OSError):
                for run_dir in sorted(parent.iterdir()):
                    manifest = _manifest(run_dir) if not run_dir.name.startswith(".") else None
                    if (manifest and manifest.get("status") == "completed" and manifest.get("name") == planned.name
                            and isinstance(manifest.get("spec"), dict)):
                        found.setdefault(results_sha256(as_read_today(manifest["spec"])), run_dir)
            self._completed[parent] = found
        return self._completed[parent]

    def _finish(self, planned: Planned, proc: MemberProcess) -> None:
        code = proc.wait()
        member = planned.member
        entry = self.record.read()["members"][member.index]
        run_dir = self.record.run_dir_of(entry)
        manifest = _manifest(run_dir)
        status, error = how_it_ended(code, manifest, proc.tail)
        self.record.update_member(member.index, status=status, exit_code=code, finished_at=now_iso(), error=error)
        if status == "completed" and manifest is not None:
            self._completed.setdefault(planned.run_parent, {}).setdefault(planned.results_sha256, run_dir)
            best = (manifest.get("metrics") or {}).get("best_val_loss")
            shown = f", best val loss {best:.4f}" if isinstance(best, (int, float)) else ""
            self.say(f"member {member.index} ({member.label()}) completed{shown}")
        elif status == "interrupted":
            self.say(f"member {member.index} ({member.label()}) interrupted (exit {code}); `nanogpt sweep --resume {self.record.dir}` continues it")
        else:
            # printed now, not at the end: the other members go on
            first, _, rest = (error or "").partition("\n")
            with self._console:
                print(f"sweep: member {member.index} ({member.label()}) FAILED (exit {code}): {first}", file=sys.stderr, flush=True)
                for line in rest.splitlines():
                    print(f"    {line}", file=sys.stderr, flush=True)
                print(f"    its log: {self.record.log_path(member.index)}", file=sys.stderr, flush=True)


def how_it_ended(code: int, manifest: dict[str, Any] | None, tail: Sequence[str]) -> tuple[str, str | None]:
    """(status, error) of a member whose process exited with `code`: the exit status says how it
    ended; its manifest, when it says the same, says why (else the last lines it printed)."""
    recorded = manifest.get("status") if manifest is not None else None
    if code == 0 and recorded == "completed":
        return "completed", None
    if code == EXIT_INTERRUPTED:
        return "interrupted", None
    if recorded == "failed" and manifest is not None and manifest.get("error"):
        return "failed", manifest["error"]
    ended = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit {code}"
    return "failed", "\n".join(filter(None, ["\n".join(tail), f"(its process ended: {ended})"]))


def _manifest(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not (run_dir / MANIFEST).exists():
        return None
    try:
        return read_manifest(run_dir / MANIFEST)
    except InputError:
        return None
