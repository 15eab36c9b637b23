"""Agreement with lm-evaluation-harness: on the same tiny model and the fixture rows, the harness (through its
own task configs, pointed at the local files) and the native scoring choose the same answer for every example
and report the same accuracies. Skipped only where lm-eval is not installed (CI installs it through .[dev])."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from nanogpt.cli import main  # noqa: E402
from nanogpt.evaluation.harness import exported, harness_figures, local_task_configs, run_harness  # noqa: E402
from nanogpt.models.loading import load_model  # noqa: E402
from nanogpt.models.multiple_choice import evaluate_tasks  # noqa: E402

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tasks"
TASKS = ["hellaswag", "arc_easy", "piqa", "winogrande"]


@pytest.fixture(scope="module")
def both(hf_dir, tmp_path_factory):
    """(native results, the harness's output) on the fixtures, for the tiny GPT-2 of conftest's hf_dir."""
    loaded = load_model(str(hf_dir))
    files = {t: str(FIXTURES / f"{t}.jsonl") for t in TASKS}
    configs = tmp_path_factory.mktemp("harness-tasks")
    with exported(loaded.model, loaded.tokenizer) as model_dir:
        names = local_task_configs(configs, files)
        harness = run_harness(model_dir, names, include_path=str(configs), log_samples=True)
    native = evaluate_tasks(loaded.model, loaded.tokenizer, TASKS, data=files)
    return native, harness, dict(zip(TASKS, names))


def response_loglikelihood(resp) -> float:
    while isinstance(resp, (list, tuple)):
        resp = resp[0]
    return float(resp)


@pytest.mark.parametrize("task", TASKS)
def test_native_scores_agree_with_the_harness_per_example(both, task):
    native, harness, names = both
    result = next(r for r in native if r.task == task)
    samples = sorted(harness["samples"][names[task]], key=lambda s: s["doc_id"])
    assert len(samples) == result.examples == 24
    theirs = [[response_loglikelihood(r) for r in s["resps"]] for s in samples]
    ours = [list(s.loglikelihoods) for s in result.per_example]
    for a, b in zip(theirs, ours):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        assert int(np.argmax(a)) == int(np.argmax(b))  # the same choice for every example
    figures = harness_figures(harness)[names[task]]
    assert figures["acc"] == result.acc  # to the last digit
    if result.acc_norm is not None:
        assert figures["acc_norm"] == result.acc_norm
    else:
        assert "acc_norm" not in figures


def test_the_verb_runs_the_harness(capsys, hf_dir, monkeypatch):
    """--harness with an unknown task is refused by name (the harness itself is run above)."""
    code = main(["evaluate", str(hf_dir), "--harness", "no_such_task_anywhere", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "no task 'no_such_task_anywhere'" in err
