"""Multiple-choice scoring as lm-evaluation-harness does it: the core of `nanogpt evaluate` and of the tasks a run scores while it trains.

Each choice of an example is a (context, continuation) pair (see nanogpt.data.tasks); its score is the
log-likelihood of the continuation's tokens given the context's, summed. `acc` is the fraction of
examples whose best-scoring choice is the right one; `acc_norm` the same with each score divided by
its choice's length in characters (the harness's completion_len; bytes where the text is ASCII).

The tokens of a pair are the harness's (`HFLM._encode_pair`): spaces at the end of the context
move to the start of the continuation; the whole text is encoded, and the continuation's tokens
are those after the context's own encoding; an empty context is the end-of-text token. A pair
longer than the model's block size keeps its last block_size + 1 tokens (the harness's left
truncation); a continuation that alone does not fit is an error.

Batching: the choices of an example go in one forward together, with other examples' up to
`batch_size` rows, right-padded (a causal model's positions before the padding do not see it).
Batches are fixed by the examples alone (longest first, so little of a forward is padding), so on a
torchrun job each rank scores every world_size-th batch and the per-example results, gathered, are
those of one process with the same batch size. The vocabulary's softmax is taken only at the
continuations' positions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from nanogpt.data.tasks import Example
from nanogpt.errors import InputError


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
    which_row, position, target = [], [], []
    for i, r in enumerate(rows):
        n = len(r.tokens) - 1
        x[i, :n] = r.tokens[:-1]
        which_row += [i] * r.scored
        position += range(n - r.scored, n)
        target += r.tokens[n - r.scored + 1:].tolist()  # only the continuation's targets
    with autocast or contextlib.nullcontext():
        logits, _ = model(torch.from_numpy(x).to(device), all_logits=True)  # (B, T, vocab)
    rows_t = torch.tensor(which_row, device=device)
    # the softmax over the vocabulary only where a target is scored: most positions are context
    logprobs = F.log_softmax(logits[rows_t, torch.tensor(position, device=device)].float(), dim=-1)
    picked = logprobs.gather(-1, torch.tensor(target, device=device).unsqueeze(-1)).squeeze(-1)
    dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
    return torch.zeros(len(rows), dtype=dtype, device=device).index_add_(0, rows_t, picked.to(dtype)).cpu().tolist()


@attrs.frozen
class Scored:
    """One example's scores."""

    index: int
    label: int
    loglikelihoods: tuple[float, ...]
    pred: int
    pred_norm: int


def batches_of(examples: Sequence[Example], batch_size: int) -> list[list[int]]:
    """Example indices in batches of about `batch_size` rows; an example's choices never split (a batch has at least one).

    Longest examples first (by characters, a stand-in for tokens), so a batch's rows are of like
    length and little of a forward is padding; the order depends on the examples alone."""
    out: list[list[int]] = []
    current: list[int] = []
    rows = 0
    order = sorted(range(len(examples)), key=lambda i: -max(len(c) + len(k) for c, k in zip(examples[i].contexts, examples[i].continuations)))
    for i in order:
        ex = examples[i]
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
        return sorted(mine, key=lambda s: s.index)
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
    from nanogpt.data.tasks import TASKS, load_examples

    results = []
    for name in tasks:
        examples, source = load_examples(name, (data or {}).get(name), limit=limit, seed=seed)
        scored = score_examples(model, tokenizer, examples, **scoring)
        results.append(summarise(name, source, scored, TASKS.get(name)[0].metrics))
    return results
