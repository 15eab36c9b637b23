"""Multiple-choice evaluation (`nanogpt evaluate MODEL --tasks hellaswag,...`), scored as lm-evaluation-harness does.

    nanogpt evaluate RUN_OR_CHECKPOINT --tasks hellaswag,arc_easy,piqa,winogrande [--limit N] [--data [TASK=]PATH] [--json]

Each choice of an example is a (context, continuation) pair (see tasks.py); its score is the
log-likelihood of the continuation's tokens given the context's, summed. `acc` is the fraction of
examples whose best-scoring choice is the right one; `acc_norm` the same with each score divided by
its choice's length in characters (the harness's completion_len; bytes where the text is ASCII).

The tokens of a pair are the harness's (`HFLM._encode_pair`): spaces at the end of the context
move to the start of the continuation; the whole text is encoded, and the continuation's tokens
are those after the context's own encoding; an empty context is the end-of-text token. A pair
longer than the model's block size keeps its last block_size + 1 tokens (the harness's left
truncation); a continuation that alone does not fit is an error.

Batching: the choices of an example go in one forward together, with other examples' up to
--batch-size rows, right-padded (a causal model's positions before the padding do not see it).
Batches are fixed by example order, so on a torchrun job each rank scores every world_size-th
batch and the per-example results, gathered, are those of one process with the same batch size.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from nanogpt.errors import InputError
from nanogpt.evaluation.tasks import Example


def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The context's and continuation's token ids, split as lm-evaluation-harness splits them."""
    if context == "":
        if tokenizer.eot_id is None:
            raise InputError(f"an empty context is scored after the end-of-text token, which the {tokenizer.name} tokenizer has none of")
        ids = tokenizer.encode(continuation)
        # a continuation that itself starts with end-of-text has that token as its context
        return ([tokenizer.eot_id], ids) if not ids or ids[0] != tokenizer.eot_id else (ids[:1], ids[1:])
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


@attrs.frozen
class Row:
    """One forward row: input tokens, and how many of the last targets are the continuation's."""

    tokens: np.ndarray
    """Inputs and targets: tokens[:-1] go in, tokens[1:] are predicted."""
    scored: int


def make_row(context_ids: Sequence[int], continuation_ids: Sequence[int], block_size: int) -> Row:
    if not continuation_ids:
        raise InputError("a continuation encodes to no tokens: there is nothing to score")
    if len(continuation_ids) > block_size:
        raise InputError(f"a continuation of {len(continuation_ids)} tokens does not fit the model's block size ({block_size})")
    whole = np.asarray([*context_ids, *continuation_ids], dtype=np.int64)[-(block_size + 1):]
    return Row(whole, len(continuation_ids))


@torch.no_grad()
def score_rows(model: torch.nn.Module, rows: Sequence[Row], *, device: Any = "cpu", autocast: Any = None) -> list[float]:
    """Summed log-likelihood of each row's scored targets, from one forward of all rows, right-padded."""
    width = max(len(r.tokens) - 1 for r in rows)
    x = np.zeros((len(rows), width), dtype=np.int64)
    y = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        n = len(r.tokens) - 1
        x[i, :n] = r.tokens[:-1]
        y[i, n - r.scored:n] = r.tokens[n - r.scored + 1:]  # only the continuation's targets
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y).to(device)
    with autocast or contextlib.nullcontext():
        logits, _ = model(xt, all_logits=True)  # (B, T, vocab)
    logprobs = F.log_softmax(logits.float(), dim=-1)
    picked = logprobs.gather(-1, yt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    picked = torch.where(yt >= 0, picked, torch.zeros_like(picked))
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return picked.to(dtype).sum(dim=1).cpu().tolist()


@attrs.frozen
class Scored:
    """One example's scores."""

    index: int
    label: int
    loglikelihoods: tuple[float, ...]
    pred: int
    pred_norm: int


def batches_of(examples: Sequence[Example], batch_size: int) -> list[list[int]]:
    """Example indices in batches of about `batch_size` rows; an example's choices never split (a batch has at least one)."""
    out: list[list[int]] = []
    current: list[int] = []
    rows = 0
    for i, ex in enumerate(examples):
        if current and rows + len(ex) > batch_size:
            out.append(current)
            current, rows = [], 0
        current.append(i)
        rows += len(ex)
    if current:
        out.append(current)
    return out


def score_examples(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Sequence[Example],
    *,
    batch_size: int = 32,
    device: Any = "cpu",
    autocast: Any = None,
    rank: int = 0,
    world_size: int = 1,
    gather: Callable[[list[Scored]], list[list[Scored]]] | None = None,
    progress: bool = False,
) -> list[Scored]:
    """Every example scored (rank `rank` of `world_size` scores its batches; `gather` returns all ranks' lists)."""
    from nanogpt.fileio import progress_bar

    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1 (got {batch_size})")
    block_size = model.context_length
    batches = batches_of(examples, batch_size)[rank::world_size]
    was_training = model.training
    model.eval()
    mine: list[Scored] = []
    try:
        with progress_bar(progress, total=sum(len(b) for b in batches), unit="example", desc="scoring") as bar:
            for batch in batches:
                rows = [
                    make_row(*encode_pair(tokenizer, ctx, cont), block_size)
                    for i in batch for ctx, cont in zip(examples[i].contexts, examples[i].continuations)
                ]
                lls = score_rows(model, rows, device=device, autocast=autocast)
                at = 0
                for i in batch:
                    ex = examples[i]
                    mine.append(judge(i, ex, lls[at:at + len(ex)]))
                    at += len(ex)
                bar.update(len(batch))
    finally:
        model.train(was_training)
    if world_size == 1:
        return mine
    if gather is None:
        raise ValueError("scoring on several ranks needs `gather`")
    everyone = [s for part in gather(mine) for s in part]
    return sorted(everyone, key=lambda s: s.index)


def judge(index: int, example: Example, lls: Sequence[float]) -> Scored:
    scores = np.asarray(lls, dtype=np.float64)
    normed = scores / np.asarray(example.choice_lengths, dtype=np.float64)
    return Scored(index, example.label, tuple(float(v) for v in scores), int(np.argmax(scores)), int(np.argmax(normed)))


@attrs.frozen
class TaskResult:
    task: str
    source: str
    examples: int
    acc: float
    acc_norm: float | None
    per_example: tuple[Scored, ...] = attrs.field(repr=False, eq=False)

    def figures(self) -> dict[str, float]:
        """The metrics by name (acc_norm where the task reports it)."""
        out = {"acc": self.acc}
        if self.acc_norm is not None:
            out["acc_norm"] = self.acc_norm
        return out


def summarise(task: str, source: str, scored: Sequence[Scored], metrics: Sequence[str]) -> TaskResult:
    n = len(scored)
    acc = sum(s.pred == s.label for s in scored) / n
    acc_norm = sum(s.pred_norm == s.label for s in scored) / n if "acc_norm" in metrics else None
    return TaskResult(task, source, n, acc, acc_norm, tuple(scored))


def evaluate_tasks(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    data: dict[str, str] | None = None,
    limit: int | None = None,
    seed: int | None = None,
    **scoring: Any,
) -> list[TaskResult]:
    """Each task's accuracies (see score_examples for `scoring`'s keywords)."""
    from nanogpt.evaluation.tasks import TASKS, load_examples

    results = []
    for name in tasks:
        examples, source = load_examples(name, (data or {}).get(name), limit=limit, seed=seed)
        scored = score_examples(model, tokenizer, examples, **scoring)
        results.append(summarise(name, source, scored, TASKS.get(name)[0].metrics))
    return results


# ------------------------------------------------------------------------------------ the verb


def parse_tasks(text: str) -> list[str]:
    from nanogpt.evaluation.tasks import TASKS

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
