"""The trackers a spec names in `logging.trackers`, and the guard that keeps each one from ever
stopping a run.

The run directory is the source of truth; a tracker is a mirror. Every scalar TensorBoard gets,
Weights & Biases and MLflow get under the same name at the same step. Each tracker is started
and called through `Trackers`, which reports a tracker that cannot start or raises once on
stderr, drops it, and records it in the manifest (`trackers`: per tracker its status, error and
run id), and the run goes on. wandb and mlflow are optional packages, imported only when a run
names them (mlflow alone takes seconds to import).

A resumed run continues the same tracker run: its id is in the manifest from the start.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nanogpt.training.tracking import TensorBoardTracker, Tracker, flat_hparams

if TYPE_CHECKING:
    from nanogpt.runs.manifest import RunRecord

INSTALL = {"wandb": "pip install 'nanogpt[wandb]'", "mlflow": "pip install 'nanogpt[mlflow]'"}
"""How to get each optional tracker's package."""


class TrackerUnavailable(Exception):
    """A tracker that cannot start, with the reason in words."""


def missing_packages(trackers: tuple[str, ...]) -> list[str]:
    """The named trackers whose package is not installed (without importing them)."""
    from importlib.util import find_spec

    return [name for name in trackers if name in INSTALL and find_spec(name) is None]


def tracker_params(manifest: dict[str, Any]) -> dict[str, Any]:
    """What a tracker gets as its run's config/params: the resolved spec flat, its hash, the git
    commit, and the run's and its sweep's ids."""
    out = flat_hparams(manifest["spec"])
    out["spec_sha256"] = manifest.get("spec_sha256")
    out["git.commit"] = (manifest.get("git") or {}).get("commit")
    out["run_id"] = manifest.get("run_id")
    sweep = manifest.get("sweep")
    if isinstance(sweep, dict):
        out.update({"sweep.id": sweep.get("id"), "sweep.index": sweep.get("index")})
    return out


def _sweep_id(manifest: dict[str, Any]) -> str | None:
    sweep = manifest.get("sweep")
    return str(sweep["id"]) if isinstance(sweep, dict) and sweep.get("id") is not None else None


class WandbTracker(Tracker):
    """A Weights & Biases run: offline by default, its files under the run directory (`wandb/`)."""

    def __init__(self, run_dir: Path, manifest: dict[str, Any], logging: Any, run_id: str | None):
        import wandb

        resumed = run_id is not None
        sweep = _sweep_id(manifest)
        self.run = wandb.init(
            project=logging.wandb_project or manifest["name"], entity=logging.wandb_entity,
            name=f"{manifest['name']}/{manifest['run_id']}", id=run_id, resume="allow" if resumed else None,
            group=sweep, tags=[t for t in (manifest["name"], sweep and f"sweep:{sweep}") if t],
            config=tracker_params(manifest), dir=str(run_dir), mode=logging.wandb_mode,
            # the run's console is its own: W&B must not wrap stdout/stderr; no system-metrics thread
            settings=wandb.Settings(console="off", x_disable_stats=True, silent=True),
            reinit="create_new",
        )
        if resumed:
            self.run.config.update(tracker_params(manifest), allow_val_change=True)
        self.status = "completed"

    @property
    def record(self) -> dict[str, Any]:
        return {"run_id": self.run.id, "mode": self.run.settings.mode}

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        present = {k: v for k, v in values.items() if v is not None}
        if present:
            self.run.log(present, step=step)

    def ended(self, status: str) -> None:
        self.status = status

    def close(self) -> None:
        self.run.finish(exit_code=0 if self.status == "completed" else 1)


class MlflowTracker(Tracker):
    """An MLflow run in `logging.mlflow_uri` (default: `sqlite:///<out_dir>/mlflow.db`), under the
    MLflow experiment named like the spec's. Metrics are sent without waiting (MLflow's own
    asynchronous logging), so a slow store does not slow the training steps."""

    STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, run_dir: Path, manifest: dict[str, Any], logging: Any, run_id: str | None):
        from mlflow import MlflowClient

        self.uri = mlflow_uri(logging)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.done_through = -1  # steps a resumed run already holds are not logged twice
        self.pending: list[Any] = []  # metrics sent and not yet known to be stored
        params = {k: _param_text(v) for k, v in tracker_params(manifest).items()}
        if run_id is None:
            name = logging.mlflow_experiment or manifest["name"]
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            tags = {"nanogpt.name": manifest["name"], "nanogpt.run_id": manifest["run_id"],
                    "nanogpt.run_dir": str(run_dir)}
            if _sweep_id(manifest):
                tags["nanogpt.sweep_id"] = _sweep_id(manifest)
            self.run_id = self.client.create_run(experiment_id, run_name=f"{manifest['name']}/{manifest['run_id']}", tags=tags).info.run_id
            self._log_params(params)
        else:
            self.run_id = run_id
            run = self.client.get_run(run_id)  # raises when the store does not have it
            self.client.update_run(run_id, status="RUNNING")
            # MLflow refuses to change a param: a resume logs only those it does not have yet
            self._log_params({k: v for k, v in params.items() if k not in run.data.params})
            for key in run.data.metrics:
                history = self.client.get_metric_history(run_id, key)
                self.done_through = max([self.done_through, *(m.step for m in history)])
        self.status = "completed"

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    @property
    def record(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "uri": self.uri}

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        from mlflow.entities import Metric

        if step <= self.done_through:
            return
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if v is not None]
        if metrics:
            self.pending.append(self.client.log_batch(self.run_id, metrics=metrics, synchronous=False))
            if len(self.pending) >= 64:  # long since stored, as a rule: keep the list short
                self.flush()

    def flush(self) -> None:
        # waits on this run's own operations: mlflow.flush_async_logging() would open MLflow's
        # default store (an mlflow.db in the working directory) to do it
        pending, self.pending = self.pending, []
        for operation in pending:
            if operation is not None:
                operation.wait()

    def ended(self, status: str) -> None:
        self.status = status

    def close(self) -> None:
        self.flush()
        self.client.set_terminated(self.run_id, status=self.STATUS.get(self.status, "FINISHED"))


def mlflow_uri(logging: Any) -> str:
    """The MLflow store a run logs to. By default one SQLite store for every run under `out_dir`
    (not one per run directory): MLflow's UI compares the runs of one store, as `tensorboard
    --logdir <out_dir>` shows every run under it. (MLflow 3 refuses its older file store.)"""
    if logging.mlflow_uri is not None:
        return logging.mlflow_uri
    return "sqlite:///" + str((Path(logging.out_dir) / "mlflow.db").resolve())


def _param_text(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 6000 else text[:5997] + "..."  # MLflow's limit on a param's value


STARTERS: dict[str, Callable[..., Tracker]] = {"wandb": WandbTracker, "mlflow": MlflowTracker}


class Trackers(Tracker):
    """Every tracker of a run behind one `Tracker`: a call goes to each in turn, and one that raises
    is reported once on stderr, recorded (`on_change`), and left out from then on."""

    def __init__(self, on_change: Callable[[dict[str, dict[str, Any]]], None]):
        self.live: dict[str, Tracker] = {}
        self.records: dict[str, dict[str, Any]] = {}
        self.on_change = on_change

    def start(self, name: str, make: Callable[[], Tracker]) -> None:
        try:
            tracker = make()
        except BaseException as e:  # an import that fails, a store that is not there, a timeout
            if isinstance(e, KeyboardInterrupt):
                raise
            self._failed(name, f"could not start: {_reason(name, e)}")
            return
        self.live[name] = tracker
        self.records[name] = {"status": "ok", "error": None, **getattr(tracker, "record", {})}

    def _failed(self, name: str, error: str) -> None:
        print(f"warning: tracker {name} {error}; the run goes on without it (metrics.jsonl has every metric)",
              file=sys.stderr, flush=True)
        self.records[name] = {**self.records.get(name, {}), "status": "failed", "error": error}
        tracker = self.live.pop(name, None)
        if tracker is not None:
            try:  # its own run shows as failed: it does not hold the whole of the run
                tracker.ended("failed")
                tracker.close()
            except Exception:
                pass
        self.report()

    def report(self) -> None:
        try:
            self.on_change({k: dict(v) for k, v in self.records.items()})
        except Exception as e:  # the record is a courtesy: a run never fails for it
            print(f"warning: could not record the trackers in the manifest: {e}", file=sys.stderr)

    def _each(self, method: str, *args: Any) -> None:
        for name, tracker in list(self.live.items()):
            try:
                getattr(tracker, method)(*args)
            except Exception as e:
                self._failed(name, f"failed ({method}): {type(e).__name__}: {e}")

    def scalars(self, step: int, values: dict[str, float | None]) -> None:
        self._each("scalars", step, values)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self._each("text", tag, text, step)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float | None]) -> None:
        self._each("hparams", hparams, metrics)

    def flush(self) -> None:
        self._each("flush")

    def ended(self, status: str) -> None:
        self._each("ended", status)

    def close(self) -> None:
        self._each("close")
        self.live.clear()


def _reason(name: str, e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError) and e.name == name:
        return f"{name} is not installed ({INSTALL[name]})"
    return f"{type(e).__name__}: {e}".strip()


def build_trackers(record: RunRecord, logging: Any, *, is_main: bool, purge_step: int | None) -> Tracker:
    """The run's trackers (rank 0 only; every other rank gets one that does nothing), each recorded
    in the run's manifest. A tracker the manifest already lists with a run id (a resumed run)
    continues that run. `purge_step`: TensorBoard hides what a resumed run logged from there on."""
    if not is_main or record.run is None:
        return Tracker()
    run_dir, manifest = record.path, record.run.manifest
    trackers = Trackers(record.trackers)
    before = manifest.get("trackers") if isinstance(manifest.get("trackers"), dict) else {}
    for name in logging.trackers:
        if name == "tensorboard":
            if logging.writes_tensorboard:
                trackers.start(name, lambda: TensorBoardTracker(run_dir, purge_step))
            continue
        previous = before.get(name) if isinstance(before.get(name), dict) else {}
        run_id = previous.get("run_id") if isinstance(previous.get("run_id"), str) else None
        trackers.start(name, lambda name=name, run_id=run_id: STARTERS[name](run_dir, manifest, logging, run_id))
    if trackers.records:
        trackers.report()
    return trackers
