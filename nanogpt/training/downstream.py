"""`[evaluation]`: the multiple-choice tasks a run scores while it trains (hellaswag, arc, piqa, winogrande, ...).

The examples are drawn once, when the run starts, by a fixed seed (the same `limit` rows of each
task in every run, so curves compare across runs and seeds), and scored with `nanogpt evaluate`'s
scoring (nanogpt.models.multiple_choice) every `interval` iterations and at the end. Under ddp each
rank scores its share of the batches and the results are gathered; under fsdp every rank scores
them all (each forward gathers weights from every rank, so all ranks must run the same forwards).
The schedule is a function of the iteration alone, so a resumed run scores where the
uninterrupted one would have."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from nanogpt.config.tables import EvaluationSpec
from nanogpt.errors import InputError
from nanogpt.training.dist import DistEnv

SUBSET_SEED = 0
"""The seed of each task's fixed subset: a constant, not the run's seed, so every run scores the same examples."""


class DownstreamTasks:
    """The tasks of `[evaluation]`, their examples loaded, and when they are due."""

    def __init__(self, spec: EvaluationSpec, tokenizer: Any, *, eval_interval: int):
        from nanogpt.data.tasks import TASKS, load_examples

        self.tokenizer = tokenizer
        self.interval = spec.interval or eval_interval
        self.tasks: dict[str, tuple[list[Any], tuple[str, ...]]] = {}
        if spec.tasks and tokenizer is None:
            raise InputError("evaluation.tasks: the dataset has no tokenizer to write the tasks' text in")
        for name in spec.tasks:
            data = str(Path(spec.data_dir) / f"{name}.jsonl") if spec.data_dir else None
            try:
                TASKS.get(name)
            except InputError as e:
                raise InputError(f"evaluation.tasks: {e}") from None
            examples, _ = load_examples(name, data, limit=spec.limit, seed=SUBSET_SEED)
            try:  # a character the dataset's vocabulary lacks is found now, not at the first evaluation
                for ex in examples:
                    for text in {*ex.contexts, *(c + k for c, k in zip(ex.contexts, ex.continuations))}:
                        tokenizer.encode(text)
            except InputError as e:
                raise InputError(f"evaluation.tasks: {name}: the run's tokenizer cannot write its text: {e}") from None
            self.tasks[name] = examples, TASKS.get(name)[0].metrics

    def due(self, it: int, *, max_iters: int, eval_only: bool) -> bool:
        return bool(self.tasks) and (eval_only or it % self.interval == 0 or it == max_iters)

    def score_if_due(self, it: int, trainer: Any) -> float:
        """At a due iteration, score the tasks with the trainer's model and record the figures in its
        metrics, reports and manifest; the seconds that took (not training time, for its throughput)."""
        cfg = trainer.train_cfg
        if not self.due(it, max_iters=cfg.max_iters, eval_only=cfg.eval_only):
            return 0.0
        start = time.perf_counter()
        figures = self.score(trainer.raw_model, trainer.env, autocast=trainer.step.autocast, sharded=trainer.step.sharded)
        trainer.metrics.update(figures)
        trainer.reports.tasks(it, figures)
        trainer.record.progress(**trainer._progress(it))
        return time.perf_counter() - start

    def score(self, model: torch.nn.Module, env: DistEnv, *, autocast: Any, sharded: bool) -> dict[str, float]:
        """Each task's figures, as eval/<task>/<metric>; the same on every rank."""
        from nanogpt.models.multiple_choice import score_examples, summarise

        spread = env.distributed and not sharded
        figures: dict[str, float] = {}
        for name, (examples, metrics) in self.tasks.items():
            scored = score_examples(
                model, self.tokenizer, examples, device=env.device, autocast=autocast,
                rank=env.rank if spread else 0, world_size=env.world_size if spread else 1,
                gather=_all_gather if spread else None,
            )
            for metric, value in summarise(name, "", scored, metrics).figures().items():
                figures[f"eval/{name}/{metric}"] = value
        return figures


def _all_gather(mine: list[Any]) -> list[list[Any]]:
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    return parts
