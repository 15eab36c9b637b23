"""`nanogpt evaluate MODEL --tasks hellaswag,arc_easy,piqa,winogrande [--limit N] [--data [TASK=]PATH] [--json]`.

Loads anything `sample` loads, reads each task's rows (nanogpt.data.tasks: its Hugging Face dataset,
or a JSONL file in the same fields) and scores them as lm-evaluation-harness does
(nanogpt.models.multiple_choice, which says how). Under torchrun each rank scores a share of the
batches and rank 0 prints what they gathered: the figures of one process.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from nanogpt.errors import InputError
from nanogpt.models.multiple_choice import Scored, TaskResult, evaluate_tasks


def parse_tasks(text: str) -> list[str]:
    from nanogpt.data.tasks import TASKS

    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise InputError("--tasks names no task; the tasks are: " + ", ".join(TASKS.names()))
    for name in names:
        TASKS.get(name)  # refuses an unknown one, listing the known
    if len(set(names)) != len(names):
        raise InputError(f"--tasks names a task twice: {text!r}")
    return names


def parse_data(values: Sequence[str] | None, tasks: Sequence[str]) -> dict[str, str]:
    """--data PATH (one task) or --data TASK=PATH (each task its own file)."""
    out: dict[str, str] = {}
    for value in values or ():
        name, eq, path = value.partition("=")
        if not eq:
            if len(tasks) != 1:
                raise InputError(f"--data {value!r}: with several tasks, say whose file it is: --data TASK=PATH")
            name, path = tasks[0], value
        if name not in tasks:
            raise InputError(f"--data {value!r}: {name!r} is not one of --tasks ({', '.join(tasks)})")
        out[name] = path
    return out


def evaluate_command(args: Any) -> int:
    """`nanogpt evaluate MODEL --tasks ...`: prints the accuracies on stdout; returns the exit status."""
    from nanogpt.evaluation.sample import say
    from nanogpt.fileio import want_progress
    from nanogpt.models.loading import load_model
    from nanogpt.training.dist import pick_device_and_autocast

    if (args.tasks is None) == (args.harness is None):
        raise InputError("give --tasks (scored here) or --harness (lm-evaluation-harness's tasks), one of them")
    if args.harness is not None:
        return harness_command(args)
    tasks = parse_tasks(args.tasks)
    data = parse_data(args.data, tasks)
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1 (got {args.limit})")
    rank, world_size, gather = _distributed()
    device, autocast = pick_device_and_autocast(_rank_device(args.device, rank, world_size), args.dtype)
    loaded = load_model(args.model, which=args.checkpoint, tokenizer_meta=args.tokenizer_meta)
    model = loaded.model.to(device)
    if rank == 0:
        say(f"evaluating {loaded.description} on {', '.join(tasks)} ({device}{f', {world_size} ranks' if world_size > 1 else ''})")
    results = evaluate_tasks(
        model, loaded.tokenizer, tasks, data=data, limit=args.limit, batch_size=args.batch_size, device=device,
        autocast=autocast, rank=rank, world_size=world_size, gather=gather, progress=rank == 0 and want_progress(None),
    )
    if rank == 0:
        sys.stdout.write(json.dumps(report_dict(loaded.description, results), indent=2) + "\n" if args.json
                         else report_lines(loaded.description, results))
    return 0


def report_dict(model: str, results: Sequence[TaskResult]) -> dict[str, Any]:
    return {
        "model": model,
        "tasks": {r.task: {"source": r.source, "examples": r.examples, **r.figures()} for r in results},
    }


def report_lines(model: str, results: Sequence[TaskResult]) -> str:
    lines = [f"model: {model}", f"{'task':<14} {'examples':>8} {'acc':>8} {'acc_norm':>8}"]
    for r in results:
        norm = f"{r.acc_norm:.4f}" if r.acc_norm is not None else "-"
        lines.append(f"{r.task:<14} {r.examples:>8} {r.acc:>8.4f} {norm:>8}")
    return "\n".join(lines) + "\n"


def _distributed() -> tuple[int, int, Callable[[list[Scored]], list[list[Scored]]] | None]:
    """(rank, world size, gather) under torchrun; (0, 1, None) on one process."""
    import os

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return 0, 1, None
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    def gather(mine: list[Scored]) -> list[list[Scored]]:
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, mine)
        return parts

    return dist.get_rank(), dist.get_world_size(), gather


def _rank_device(device: str, rank: int, world_size: int) -> str:
    """Each rank its own GPU under torchrun (LOCAL_RANK), when --device leaves it to us."""
    import os

    if world_size > 1 and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return device


def harness_command(args: Any) -> int:
    """`evaluate MODEL --harness TASKS`: the harness's figures of each task, on stdout."""
    from nanogpt.evaluation.harness import exported, harness_figures, import_lm_eval, run_harness
    from nanogpt.evaluation.sample import say
    from nanogpt.models.loading import load_model

    import_lm_eval()  # before the model is loaded: a missing extra is said at once
    tasks = [t.strip() for t in args.harness.split(",") if t.strip()]
    if not tasks:
        raise InputError("--harness names no task")
    if args.data:
        raise InputError("--data is for --tasks; the harness reads its own datasets")
    loaded = load_model(args.model, which=args.checkpoint, tokenizer_meta=args.tokenizer_meta)
    say(f"exporting {loaded.description} for lm-evaluation-harness: {', '.join(tasks)}")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
    with exported(loaded.model, loaded.tokenizer) as model_dir:
        results = run_harness(model_dir, tasks, limit=args.limit, batch_size=args.batch_size, device=device)
    figures = harness_figures(results)
    if args.json:
        sys.stdout.write(json.dumps({"model": loaded.description, "harness": figures}, indent=2) + "\n")
    else:
        lines = [f"model: {loaded.description} (lm-evaluation-harness)"]
        lines += [f"{task:<20} " + "  ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())) for task, metrics in figures.items()]
        sys.stdout.write("\n".join(lines) + "\n")
    return 0
