"""`nanogpt evaluate MODEL --harness TASKS`: lm-evaluation-harness on the model, through its Python API.

The model is exported to a temporary Hugging Face directory (nanogpt.models.export, with its
tokenizer) and handed to the harness's `hf` model; every task the harness knows can then be run
(`--harness hellaswag,lambada_openai,...`). The harness is an optional extra
(`pip install 'nanogpt[eval]'`); without it the verb says so and exits 2.

`local_task_configs` writes task configs that point the harness's own task (its prompts, its
process_docs) at local JSONL files instead of the hub: the agreement test and the benchmark run the
harness and the native scoring on the same rows with them.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from nanogpt.errors import InputError

HARNESS_TASKS = {"hellaswag": "hellaswag/hellaswag.yaml", "arc_easy": "arc/arc_easy.yaml", "arc_challenge": "arc/arc_challenge.yaml",
                 "piqa": "piqa/piqa.yaml", "winogrande": "winogrande/default.yaml"}
"""The harness's config of each native task (under lm_eval/tasks/)."""
SPLITS = {"hellaswag": "validation", "arc_easy": "test", "arc_challenge": "test", "piqa": "validation", "winogrande": "validation"}


def import_lm_eval() -> Any:
    try:
        import lm_eval
        import lm_eval.tasks  # noqa: F401
    except ImportError as e:
        raise InputError(
            f"--harness needs lm-evaluation-harness, which is not installed ({e}): pip install 'nanogpt[eval]'"
        ) from None
    return lm_eval


def local_task_configs(folder: Path, files: dict[str, str]) -> list[str]:
    """Write a config per task (the harness's own, its rows from `files[task]`) into `folder`; the new task names."""
    lm_eval = import_lm_eval()
    tasks_dir = Path(lm_eval.__file__).parent / "tasks"
    names = []
    for task, path in files.items():
        if task not in HARNESS_TASKS:
            raise InputError(f"no harness config for {task!r}; the harness runs local files of: {', '.join(HARNESS_TASKS)}")
        name = f"{task}_nanogpt_local"
        split = SPLITS[task]
        (folder / f"{name}.yaml").write_text(
            f"include: {tasks_dir / HARNESS_TASKS[task]}\n"
            f"task: {name}\n"
            "tag: []\n"
            "dataset_path: json\n"
            "dataset_name: null\n"
            f"dataset_kwargs:\n  data_files:\n    {split}: {Path(path).resolve()}\n"
            "training_split: null\n"
            + ("validation_split: null\ntest_split: test\n" if split == "test" else "validation_split: validation\ntest_split: null\n"),
            encoding="utf-8",
        )
        names.append(name)
    return names


@contextlib.contextmanager
def exported(model: Any, tokenizer: Any) -> Iterator[Path]:
    """`model` and its tokenizer as a temporary Hugging Face directory."""
    from nanogpt.models.export import export_hf

    with tempfile.TemporaryDirectory(prefix="nanogpt-harness-") as tmp:
        out = Path(tmp) / "model"
        export_hf(model, tokenizer, out)
        yield out


def run_harness(model_dir: Path, tasks: Sequence[str], *, include_path: str | None = None, limit: int | None = None,
                batch_size: int = 32, device: str = "cpu", log_samples: bool = False) -> dict[str, Any]:
    """simple_evaluate on the exported model; the harness's own result dict."""
    lm_eval = import_lm_eval()
    from lm_eval.tasks import TaskManager

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise InputError(f"--harness: lm-evaluation-harness has no task {', '.join(map(repr, unknown))}")
    return lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=list(tasks), task_manager=manager,
        limit=limit, batch_size=batch_size, device=device, log_samples=log_samples,
    )


def harness_figures(results: dict[str, Any]) -> dict[str, dict[str, float]]:
    """{task: {acc, acc_norm, ...}} from the harness's results (its "acc,none" keys, stderr left out)."""
    out: dict[str, dict[str, float]] = {}
    for task, metrics in results.get("results", {}).items():
        out[task] = {key.partition(",")[0]: value for key, value in metrics.items()
                     if "," in key and "stderr" not in key and isinstance(value, (int, float))}
    return out
