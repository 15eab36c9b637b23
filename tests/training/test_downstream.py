"""[evaluation] during training: tasks scored on schedule, logged to metrics.jsonl, TensorBoard and the
manifest, equal to `evaluate` on the final weights, kept on schedule through a resume; bad tasks refused."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.tinyrun import WORDS, nanogpt, only_run_dir, tiny_spec


def winogrande_rows(folder: Path, n: int = 16) -> Path:
    """Winogrande rows in its real fields, written in the tiny corpus's characters (a char tokenizer knows no others)."""
    rng = random.Random(3)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "winogrande.jsonl").open("w") as f:
        for _ in range(n):
            before = " ".join(rng.choice(WORDS) for _ in range(4))
            after = " ".join(rng.choice(WORDS) for _ in range(3))
            row = {"sentence": f"{before} _ {after}.", "option1": rng.choice(WORDS), "option2": rng.choice(WORDS),
                   "answer": rng.choice("12")}
            f.write(json.dumps(row) + "\n")
    return folder


def task_lines(run: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "wall_seconds"} for line in lines if line["kind"] == "tasks"]


def evaluation(folder: Path, **fields) -> dict:
    return {"tasks": ["winogrande"], "interval": 20, "limit": 12, "data_dir": str(folder), **fields}


def test_tasks_are_scored_on_schedule_and_recorded(tmp_path: Path):
    folder = winogrande_rows(tmp_path / "tasks")
    spec = tiny_spec(tmp_path, evaluation=evaluation(folder))
    result = nanogpt("run", str(spec))
    assert result.returncode == 0, result.stderr
    run = only_run_dir(tmp_path / "runs")
    lines = task_lines(run)
    assert [line["iter"] for line in lines] == [0, 20, 40]
    assert all(set(line) == {"iter", "kind", "eval/winogrande/acc"} for line in lines)
    assert "step 40: winogrande acc " in result.stdout

    # the manifest holds the last figures, as `evaluate` scores the final weights on the same fixed subset
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["metrics"]["eval/winogrande/acc"] == lines[-1]["eval/winogrande/acc"]
    from nanogpt.models.loading import load_model
    from nanogpt.models.multiple_choice import evaluate_tasks
    from nanogpt.training.downstream import SUBSET_SEED

    loaded = load_model(str(run), which="latest")
    (final,) = evaluate_tasks(loaded.model, loaded.tokenizer, ["winogrande"], data={"winogrande": str(folder / "winogrande.jsonl")},
                              limit=12, seed=SUBSET_SEED)
    assert final.examples == 12 and final.acc == lines[-1]["eval/winogrande/acc"]

    # TensorBoard has the curve, and `plot` draws it by the task's name
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run)).Reload()
    assert [e.step for e in events.Scalars("eval/winogrande/acc")] == [0, 20, 40]
    plotted = nanogpt("plot", str(run), "--metric", "winogrande/acc", "-o", str(tmp_path / "acc.png"))
    assert plotted.returncode == 0, plotted.stderr


@pytest.mark.slow
def test_a_resumed_run_scores_where_the_straight_one_did(tmp_path: Path):
    folder = winogrande_rows(tmp_path / "tasks")
    spec = tiny_spec(tmp_path, evaluation=evaluation(folder, interval=15))
    nanogpt("run", str(spec), "train.max_iters=20", check=True)
    split = only_run_dir(tmp_path / "runs")
    nanogpt("run", "--resume", str(split), "train.max_iters=40", check=True)
    nanogpt("run", str(spec), "logging.run_id=straight", check=True)
    straight = tmp_path / "runs" / "tiny" / "straight"
    assert [line["iter"] for line in task_lines(straight)] == [0, 15, 30, 40]
    assert task_lines(split) == task_lines(straight)


@pytest.mark.parametrize(("fields", "message"), [
    ({"tasks": ["mmlu"]}, "evaluation.tasks: no task 'mmlu'"),
    ({"data_dir": "/nonexistent-folder"}, "no such file"),
])
def test_a_task_that_cannot_be_read_stops_the_run_before_it_trains(tmp_path: Path, fields, message):
    folder = winogrande_rows(tmp_path / "tasks")
    spec = tiny_spec(tmp_path, evaluation=evaluation(folder, **fields))
    result = nanogpt("run", str(spec))
    assert result.returncode != 0 and message in result.stderr and "Traceback" not in result.stderr


def test_text_the_tokenizer_cannot_write_is_refused_naming_the_task(tmp_path: Path):
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "winogrande.jsonl").write_text(json.dumps({"sentence": "Zebras _ run.", "option1": "a", "option2": "b", "answer": "1"}) + "\n")
    spec = tiny_spec(tmp_path, evaluation=evaluation(folder))
    result = nanogpt("run", str(spec))
    assert result.returncode == 2 and "evaluation.tasks: winogrande: the run's tokenizer cannot write its text" in result.stderr
