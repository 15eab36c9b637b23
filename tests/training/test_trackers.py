"""Weights & Biases and MLflow beside TensorBoard: the same scalars at the same steps as
metrics.jsonl, read back through each tracker's own files and client; a tracker that cannot start
or breaks mid-run leaves the run completed and the failure in the manifest; a killed run, resumed,
continues the same tracker runs. Offline throughout: W&B in offline mode, MLflow on a SQLite store
in the test's directory."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

from nanogpt.training.trackers import Trackers, missing_packages
from nanogpt.training.tracking import Tracker
from tests.tinyrun import env_with_plugins, nanogpt, only_run_dir, tiny_spec

ALL = ["tensorboard", "wandb", "mlflow"]

# metrics.jsonl's keys -> the scalar names TensorBoard (and every tracker) has
TRAIN_SCALARS = {"loss": "loss/train_step", "lr": "lr", "grad_norm": "grad_norm", "tokens_per_sec": "tokens_per_sec", "mfu": "mfu"}
EVAL_SCALARS = {"train_loss": "loss/train", "val_loss": "loss/val"}


def tracker_env(tmp: Path, **extra: str) -> dict[str, str]:
    """No network, no W&B login, nothing written outside the test's directory."""
    return env_with_plugins(WANDB_MODE="offline", WANDB_DIR=str(tmp / "wandb-home"), WANDB_CONFIG_DIR=str(tmp / "wandb-config"),
                            WANDB_CACHE_DIR=str(tmp / "wandb-cache"), WANDB_SILENT="true", **extra)


def expected_scalars(run: Path) -> dict[str, dict[int, float]]:
    """Every scalar metrics.jsonl holds, by tracker name and step."""
    out: dict[str, dict[int, float]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        names = TRAIN_SCALARS if r["kind"] == "train" else EVAL_SCALARS
        for key, name in names.items():
            if r.get(key) is not None:
                out.setdefault(name, {})[r["iter"]] = r[key]
    return out


def wandb_records(path: Path) -> list[Any]:
    """The records of an offline W&B run file (run-ID.wandb), parsed with W&B's own protobuf classes.

    The file is a LevelDB-style log: a 7-byte header (":W&B", magic, version), then 32 KiB blocks
    of chunks, each with a 7-byte header (crc32, length, type: full, first, middle, last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", data[:8]
    records, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        room = 32768 - pos % 32768
        if room < 7:  # a block's tail too short for a chunk header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(pending + chunk if kind == 4 else chunk)
            records.append(record)
            pending = b""
        else:
            pending = (pending if kind == 3 else b"") + chunk
    return records


def wandb_offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*/run-*.wandb"))


def wandb_scalars(files: list[Path]) -> tuple[dict[str, dict[int, float]], list[Any]]:
    """Scalars by name and step over W&B run files, and their `run` records."""
    scalars: dict[str, dict[int, float]] = {}
    runs = []
    for f in files:
        for r in wandb_records(f):
            kind = r.WhichOneof("record_type")
            if kind == "run":
                runs.append(r.run)
            elif kind == "history":
                step = r.history.step.num
                for item in r.history.item:
                    name = item.key or "/".join(item.nested_key)
                    if not name.startswith("_"):
                        assert step not in scalars.get(name, {}), f"{name} logged twice at step {step}"
                        scalars.setdefault(name, {})[step] = json.loads(item.value_json)
    return scalars, runs


def mlflow_scalars(uri: str, run_id: str) -> dict[str, dict[int, float]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    out: dict[str, dict[int, float]] = {}
    for key in client.get_run(run_id).data.metrics:
        for m in client.get_metric_history(run_id, key):
            assert m.step not in out.get(key, {}), f"{key} logged twice at step {m.step}"
            out.setdefault(key, {})[m.step] = m.value
    return out


def only(scalars: dict[str, dict[int, float]], names: dict[str, str]) -> dict[str, dict[int, float]]:
    return {n: v for n, v in scalars.items() if n in names.values()}


# ------------------------------------------------------------------------------ in-process


class Recording(Tracker):
    def __init__(self, fail_at: int | None = None):
        self.steps: list[int] = []
        self.closed = False
        self.fail_at = fail_at

    def scalars(self, step, values):
        if step == self.fail_at:
            raise OSError("the disk is gone")
        self.steps.append(step)

    def close(self):
        self.closed = True


def test_a_tracker_that_raises_is_reported_once_and_dropped(capsys):
    """A tracker raising mid-run is reported once on stderr, recorded as failed, closed and left
    out; the others keep every step."""
    records: list[dict] = []
    trackers = Trackers(records.append)
    good, bad = Recording(), Recording(fail_at=2)
    trackers.start("tensorboard", lambda: good)
    trackers.start("mlflow", lambda: bad)
    for step in range(5):
        trackers.scalars(step, {"lr": 1.0})
    trackers.close()
    assert good.steps == [0, 1, 2, 3, 4] and bad.steps == [0, 1] and bad.closed and good.closed
    assert records[-1]["mlflow"] == {"status": "failed", "error": "failed (scalars): OSError: the disk is gone"}
    assert records[-1]["tensorboard"]["status"] == "ok"
    err = capsys.readouterr().err
    assert err.count("warning: tracker mlflow failed (scalars): OSError: the disk is gone; the run goes on without it") == 1


def test_a_tracker_that_cannot_start_says_how_to_install_it(capsys):
    """A tracker whose package is missing is recorded as failed with the extra to install."""
    records: list[dict] = []
    trackers = Trackers(records.append)

    def start():
        raise ModuleNotFoundError("No module named 'wandb'", name="wandb")

    trackers.start("wandb", start)
    assert trackers.records["wandb"]["error"] == "could not start: wandb is not installed (pip install 'nanogpt[wandb]')"
    assert "warning: tracker wandb could not start" in capsys.readouterr().err


def test_check_warns_when_a_named_trackers_package_is_missing(tmp_path: Path, monkeypatch, capsys):
    """`check` says which named tracker has no package (found without importing it), and still passes."""
    import importlib.util

    from nanogpt.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    spec = tiny_spec(tmp_path, logging={"trackers": ALL})
    assert main(["check", str(spec)]) == 0
    err = capsys.readouterr().err
    assert f"warning: {spec}: logging.trackers names 'mlflow', whose package is not installed (pip install 'nanogpt[mlflow]')" in err
    assert "'wandb'" not in err
    assert missing_packages(("tensorboard", "wandb")) == []


@pytest.mark.parametrize("value, message", [
    ('["wandb", "mlflow", "wandb"]', "logging.trackers[2]: names 'wandb' a second time (each item once)"),
    ('["neptune"]', "logging.trackers[0]: must be one of 'tensorboard', 'wandb', 'mlflow' (got 'neptune')"),
    ('"wandb"', "logging.trackers: must be an array (got 'wandb')"),
])
def test_trackers_that_are_not_a_list_of_known_ones_are_refused(tmp_path: Path, value: str, message: str, capsys):
    """`logging.trackers` names known trackers, each once, in an array."""
    from nanogpt.cli import main

    spec = tiny_spec(tmp_path)
    assert main(["check", str(spec), f"logging.trackers={value}"]) == 2
    assert message in capsys.readouterr().err


def test_tensorboard_is_written_when_named_and_not_turned_off():
    """TensorBoard needs both: "tensorboard" in `trackers`, and the older `tensorboard` switch not false."""
    from nanogpt.config.tables import LoggingSpec

    assert LoggingSpec().writes_tensorboard
    assert not LoggingSpec(trackers=("wandb",)).writes_tensorboard
    assert not LoggingSpec(tensorboard=False).writes_tensorboard
    assert LoggingSpec(trackers=("mlflow", "tensorboard")).writes_tensorboard


def test_tracker_settings_change_no_result(tmp_path: Path):
    """Trackers and their settings are inert: a resume may change them, and diff calls them so."""
    from nanogpt.config.dotted import INERT_FIELDS, under

    for field in ("trackers", "wandb_mode", "wandb_project", "wandb_entity", "mlflow_uri", "mlflow_experiment"):
        assert under(f"logging.{field}", INERT_FIELDS)


# ------------------------------------------------------------------------------ real runs


@pytest.mark.slow
def test_wandb_and_mlflow_hold_every_metric_of_metrics_jsonl(tmp_path: Path):
    """W&B's offline run file and MLflow's store hold each scalar of metrics.jsonl at its step,
    exactly; both have the spec hash as config/param and the run's name and id."""
    spec = tiny_spec(tmp_path, train={"max_iters": 12, "eval_interval": 6}, logging={"trackers": ALL, "samples": 0})
    nanogpt("run", str(spec), env=tracker_env(tmp_path), check=True)
    run = only_run_dir(tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = manifest["trackers"]
    assert {name: r["status"] for name, r in recorded.items()} == {"tensorboard": "ok", "wandb": "ok", "mlflow": "ok"}
    expected = expected_scalars(run)
    assert set(expected["loss/train_step"]) == set(range(12)) and set(expected["loss/val"]) == {0, 6, 12}

    files = wandb_offline_runs(run)
    assert len(files) == 1
    scalars, runs = wandb_scalars(files)
    assert only(scalars, TRAIN_SCALARS | EVAL_SCALARS) == expected
    (wrun,) = runs
    assert wrun.run_id == recorded["wandb"]["run_id"] and wrun.display_name == f"tiny/{manifest['run_id']}"
    config = {item.key: json.loads(item.value_json) for item in wrun.config.update}
    assert config["spec_sha256"] == manifest["spec_sha256"] and config["model.n_layer"] == 2

    assert recorded["mlflow"]["uri"] == f"sqlite:///{(tmp_path / 'runs' / 'mlflow.db').resolve()}"
    assert only(mlflow_scalars(recorded["mlflow"]["uri"], recorded["mlflow"]["run_id"]), TRAIN_SCALARS | EVAL_SCALARS) == expected
    from mlflow import MlflowClient

    mrun = MlflowClient(tracking_uri=recorded["mlflow"]["uri"]).get_run(recorded["mlflow"]["run_id"])
    assert mrun.data.params["spec_sha256"] == manifest["spec_sha256"]
    assert mrun.data.tags["nanogpt.run_id"] == manifest["run_id"] and mrun.info.status == "FINISHED"


@pytest.mark.slow
def test_trackers_that_fail_leave_the_run_completed(tmp_path: Path):
    """W&B refusing to start and MLflow raising mid-run: the run completes, metrics.jsonl and
    TensorBoard have everything, and the manifest says which tracker failed and why."""
    spec = tiny_spec(tmp_path, train={"max_iters": 8, "eval_interval": 4}, logging={"trackers": ALL, "samples": 0},
                     extra='plugins = ["tracker_faults"]')
    out = nanogpt("run", str(spec), env=tracker_env(tmp_path, TRACKER_FAIL_START="wandb", TRACKER_FAIL_AT="mlflow:3"))
    assert out.returncode == 0, out.stderr
    run = only_run_dir(tmp_path / "runs")
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    recorded = manifest["trackers"]
    assert recorded["tensorboard"]["status"] == "ok"
    assert recorded["wandb"] == {"status": "failed", "error": "could not start: ConnectionError: no server at the tracking URI (on purpose)"}
    assert recorded["mlflow"]["status"] == "failed"
    assert recorded["mlflow"]["error"] == "failed (scalars): RuntimeError: the tracker broke at step 3 (on purpose)"
    assert out.stderr.count("warning: tracker mlflow failed") == 1 and out.stderr.count("warning: tracker wandb could not start") == 1
    assert set(expected_scalars(run)["loss/train_step"]) == set(range(8))
    # what MLflow had before it broke is kept, and nothing after
    steps = mlflow_scalars(recorded["mlflow"]["uri"], recorded["mlflow"]["run_id"])["loss/train_step"]
    assert sorted(steps) == [0, 1, 2]
    from mlflow import MlflowClient

    # MLflow's run shows it does not hold the whole run
    assert MlflowClient(tracking_uri=recorded["mlflow"]["uri"]).get_run(recorded["mlflow"]["run_id"]).info.status == "FAILED"


@pytest.mark.slow
def test_a_killed_run_resumed_continues_the_same_tracker_runs(tmp_path: Path):
    """SIGKILLed after iteration 9 (checkpoint at 6) and resumed: the same W&B run id (a second
    offline file of it) and the same MLflow run, which then has every step once, as metrics.jsonl."""
    spec = tiny_spec(tmp_path, train={"max_iters": 12, "eval_interval": 6}, logging={"trackers": ALL, "samples": 0},
                     extra='plugins = ["tracker_faults"]')
    killed = nanogpt("run", str(spec), env=tracker_env(tmp_path, KILL_AFTER_STEP="9"), cwd=tmp_path)
    assert killed.returncode == -9, killed.stderr
    run = only_run_dir(tmp_path / "runs")
    first = json.loads((run / "manifest.json").read_text())["trackers"]
    nanogpt("run", "--resume", str(run), env=tracker_env(tmp_path), check=True, cwd=tmp_path)
    assert not (tmp_path / "mlflow.db").exists()  # MLflow's default store, in the working directory: never touched
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["resumes"][0]["from_checkpoint"].endswith("00000006.pt")
    recorded = manifest["trackers"]
    assert recorded["wandb"]["run_id"] == first["wandb"]["run_id"] and recorded["mlflow"]["run_id"] == first["mlflow"]["run_id"]

    files = wandb_offline_runs(run)
    assert len(files) == 2
    _, runs = wandb_scalars(files[1:])
    assert [r.run_id for r in runs] == [first["wandb"]["run_id"]]

    expected = only(expected_scalars(run), {"loss": "loss/train_step", "lr": "lr"} | EVAL_SCALARS)
    got = only(mlflow_scalars(recorded["mlflow"]["uri"], recorded["mlflow"]["run_id"]), {"loss": "loss/train_step", "lr": "lr"} | EVAL_SCALARS)
    assert got == expected  # the resume is exact, so the steps MLflow had from before it are the same numbers


@pytest.mark.slow
def test_sync_gives_a_tracker_what_logging_live_gives(tmp_path: Path):
    """A run made with TensorBoard only, synced afterwards: MLflow and W&B hold each scalar of
    metrics.jsonl at its step, with the spec hash; the manifest records the sync, and a second
    sync of the same tracker is refused (exit 2)."""
    spec = tiny_spec(tmp_path, train={"max_iters": 8, "eval_interval": 4}, logging={"samples": 0})
    nanogpt("run", str(spec), env=tracker_env(tmp_path), check=True)
    run = only_run_dir(tmp_path / "runs")
    for to in ("mlflow", "wandb"):
        out = nanogpt("sync", str(run), "--to", to, env=tracker_env(tmp_path), cwd=tmp_path, check=True)
        assert out.stdout.startswith(f"synced 11 lines of metrics.jsonl to {to}"), out.stdout
    manifest = json.loads((run / "manifest.json").read_text())
    recorded = manifest["trackers"]
    assert recorded["mlflow"]["synced"] and recorded["wandb"]["synced"] and recorded["mlflow"]["status"] == "ok"
    # what the live run would have sent: every scalar of metrics.jsonl, perplexities from the losses
    expected = expected_scalars(run)
    mlflow = mlflow_scalars(recorded["mlflow"]["uri"], recorded["mlflow"]["run_id"])
    assert only(mlflow, TRAIN_SCALARS | EVAL_SCALARS) == expected
    assert sorted(mlflow["perplexity/val"]) == [0, 4, 8]
    scalars, (wrun,) = wandb_scalars(wandb_offline_runs(run))
    assert only(scalars, TRAIN_SCALARS | EVAL_SCALARS) == expected and wrun.run_id == recorded["wandb"]["run_id"]
    from mlflow import MlflowClient

    params = MlflowClient(tracking_uri=recorded["mlflow"]["uri"]).get_run(recorded["mlflow"]["run_id"]).data.params
    assert params["spec_sha256"] == manifest["spec_sha256"]
    again = nanogpt("sync", str(run), "--to", "mlflow", env=tracker_env(tmp_path), cwd=tmp_path)
    assert again.returncode == 2 and "was logged to mlflow already" in again.stderr
    assert not (tmp_path / "mlflow.db").exists()
