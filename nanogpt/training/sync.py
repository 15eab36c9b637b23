"""`nanogpt sync RUN --to wandb|mlflow`: a run's record replayed into a tracker after the fact, for a
run made without that tracker, or on a machine with no network (the run directory is the source
of truth; a tracker is its mirror).

Every scalar goes under the name and at the step the live run gives it (metrics.jsonl's train and
evaluation lines; the perplexities computed from the losses as the loop does), and the tracker
run gets the same config/params and names. The new tracker run's id goes into the manifest's
`trackers`, so a second sync is refused rather than making a second copy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs

from nanogpt.errors import InputError
from nanogpt.runs.manifest import MANIFEST, METRICS, SPEC, RunDir, RunRecord, read_manifest
from nanogpt.runs.runlock import RunLock

TRAIN_SCALARS = {"loss": "loss/train_step", "lr": "lr", "grad_norm": "grad_norm", "tokens_per_sec": "tokens_per_sec", "mfu": "mfu"}
"""metrics.jsonl's keys on a train line -> the scalar names the live run logs (nanogpt.training.tracking.Reports)."""


def logged_scalars(run_dir: Path) -> Iterator[tuple[int, dict[str, float | None]]]:
    """(step, scalars) as the live run logged them, from metrics.jsonl; a line cut short by a kill is skipped."""
    path = run_dir / METRICS
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
            step, kind = int(r["iter"]), r["kind"]
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "train":
            yield step, {name: r.get(key) for key, name in TRAIN_SCALARS.items()}
        elif kind == "eval":
            train, val = r.get("train_loss"), r.get("val_loss")
            yield step, {"loss/train": train, "loss/val": val,
                         "perplexity/train": None if train is None else math.exp(min(train, 700)),
                         "perplexity/val": None if val is None else math.exp(min(val, 700))}


def sync_run(run_dir: str, to: str) -> int:
    """Replay RUN into the tracker `to`; 0 when every scalar went, 1 when the tracker failed."""
    from nanogpt.config.load import load_spec
    from nanogpt.training.trackers import STARTERS, Trackers

    path = Path(run_dir)
    if not (path / SPEC).is_file():
        raise InputError(f"{run_dir!r} is not a run directory (no {SPEC})")
    with RunLock.acquire(path) as lock:  # refused while the run is running
        manifest = read_manifest(path / MANIFEST)
        before = manifest.get("trackers") if isinstance(manifest.get("trackers"), dict) else {}
        if isinstance(before.get(to), dict) and before[to].get("status") == "ok":
            raise InputError(f"{run_dir!r} was logged to {to} already (run id {before[to].get('run_id')}); "
                             "syncing it again would make a second copy")
        exp, _ = load_spec(path / SPEC, [], check_files=False)
        # the default MLflow store is the one beside the run, wherever the run dir is now
        logging = attrs.evolve(exp.logging, out_dir=str(path.parent.parent))
        record = RunRecord(path, RunDir(path, manifest, lock))
        trackers = Trackers(lambda records: record.trackers({name: {**r, "synced": True} for name, r in records.items()}))
        trackers.start(to, lambda: STARTERS[to](path, manifest, logging, None))
        trackers.report()
        steps = 0
        for step, values in logged_scalars(path):
            trackers.scalars(step, values)
            steps += 1
        trackers.ended(manifest.get("status") or "completed")
        trackers.close()
        ok = trackers.records[to]["status"] == "ok"
        if ok:
            print(f"synced {steps} lines of {METRICS} to {to} (run id {trackers.records[to].get('run_id')})")
        return 0 if ok else 1
