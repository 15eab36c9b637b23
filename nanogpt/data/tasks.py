"""Multiple-choice tasks by name (`TASKS`): where their rows come from and how a row becomes an `Example`.

Each task turns one row of its dataset (a dict in the dataset's own fields) into an `Example`: the
(context, continuation) pairs whose log-likelihoods are compared, and the index of the right one.
The prompts are lm-evaluation-harness's (its lm_eval/tasks/<task>/*.yaml and utils.py), so the
figures are the ones papers report:

- hellaswag: the context is `activity_label: ctx_a Ctx_b` and each of the four `endings` a
  continuation, all through the harness's `preprocess` (WikiHow's "[title]" and other bracketed
  artifacts removed, double spaces collapsed); validation split (the test split has no labels).
- arc_easy, arc_challenge: "Question: {question}\\nAnswer:" and each of `choices.text`; the gold one
  is the index of `answerKey` in `choices.label`; test split.
- piqa: "Question: {goal}\\nAnswer:" and `sol1`, `sol2`; validation split.
- winogrande: the other way round: each option filled into the sentence up to its blank is a
  context, and the rest of the sentence after the blank the one continuation they share (the
  harness's "partial evaluation"); validation split of winogrande_xl. Only `acc`: the
  continuation is the same for every choice, so normalising by its length changes nothing.

A continuation follows its context after one space (the harness's `target_delimiter`).

Rows come from the task's Hugging Face dataset (id, config, split and revision in its `Task`,
read through `datasets` into its cache, so later runs work offline), or from a local JSONL file
in the same fields (`--data PATH`). A plugin adds a task from its own module::

    from nanogpt.data.tasks import TASKS, Example, Task, text_field

    @TASKS.register(Task(name="yesno", hf_id="me/yesno", split="validation", revision="main"))
    def yesno_example(row):
        return Example.shared_context(text_field(row, "question"), ["yes", "no"], int(row["label"] == "no"))

Bad rows (a field missing or of the wrong type, no choices, an empty choice, a label out of
range) are refused with a DataError naming the task, the file or dataset, and the row.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs

from nanogpt.errors import DataError, InputError

TARGET_DELIMITER = " "
"""What separates a context from its continuation (lm-evaluation-harness's default target_delimiter)."""


class RowError(ValueError):
    """A row a task cannot read; the loader adds which task, file and row."""


@attrs.frozen
class Example:
    """One question: its (context, continuation) pairs, one per choice, and the index of the right one."""

    contexts: tuple[str, ...]
    continuations: tuple[str, ...]
    label: int
    choice_lengths: tuple[int, ...]
    """Characters of each choice as the harness counts them for acc_norm (the choice text, without the delimiter)."""

    @classmethod
    def shared_context(cls, context: str, choices: Sequence[str], label: int) -> Example:
        """One context, a continuation per choice (hellaswag, arc, piqa)."""
        choices = _check_choices(choices, label)
        return cls(
            contexts=(context,) * len(choices),
            continuations=tuple(TARGET_DELIMITER + c for c in choices),
            label=label,
            choice_lengths=tuple(len(c) for c in choices),
        )

    @classmethod
    def shared_continuation(cls, contexts: Sequence[str], continuation: str, label: int) -> Example:
        """A context per choice and one continuation they share (winogrande)."""
        contexts = _check_choices(contexts, label)
        if not continuation:
            raise RowError("the continuation is empty")
        return cls(
            contexts=tuple(contexts),
            continuations=(TARGET_DELIMITER + continuation,) * len(contexts),
            label=label,
            choice_lengths=tuple(len(c) for c in contexts),
        )

    def __len__(self) -> int:
        return len(self.contexts)


def _check_choices(choices: Sequence[str], label: int) -> list[str]:
    choices = list(choices)
    if len(choices) < 2:
        raise RowError(f"it has {len(choices)} choice(s); a multiple-choice question needs at least 2")
    for i, c in enumerate(choices):
        if not isinstance(c, str):
            raise RowError(f"choice {i} is a {type(c).__name__}, not text")
        if not c.strip():
            raise RowError(f"choice {i} is empty")
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise RowError(f"its label {label!r} is not the index of one of its {len(choices)} choices (0..{len(choices) - 1})")
    return choices


def _field(row: dict[str, Any], name: str) -> Any:
    if name not in row:
        raise RowError(f"it has no field {name!r} (fields: {', '.join(sorted(row)) or 'none'})")
    return row[name]


def text_field(row: dict[str, Any], name: str) -> str:
    """Field `name` of a row, which must be text."""
    value = _field(row, name)
    if not isinstance(value, str):
        raise RowError(f"field {name!r} is a {type(value).__name__}, not text")
    return value


def int_field(row: dict[str, Any], name: str) -> int:
    """Field `name` of a row as an int: an int, or text of one ("2", as HellaSwag stores its labels)."""
    value = _field(row, name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    raise RowError(f"field {name!r} is {value!r}, not an integer label")


# ------------------------------------------------------------------------------ the registry


@attrs.frozen
class Task:
    """Where a task's rows are: a Hugging Face dataset, pinned."""

    name: str
    hf_id: str
    split: str
    revision: str
    """The git revision of the dataset repository read (a commit, tag or branch)."""
    hf_config: str | None = None
    metrics: tuple[str, ...] = ("acc", "acc_norm")

    @property
    def source(self) -> str:
        config = f":{self.hf_config}" if self.hf_config else ""
        return f"hf:{self.hf_id}@{self.revision}{config} ({self.split} split)"


RowReader = Callable[[dict[str, Any]], Example]


class TaskRegistry:
    """Task name -> (Task, the function that reads one of its rows)."""

    def __init__(self) -> None:
        self._tasks: dict[str, tuple[Task, RowReader]] = {}

    def register(self, task: Task) -> Callable[[RowReader], RowReader]:
        """Register `task`, decorating the function that turns its rows into Examples; re-registering replaces."""

        def decorate(read: RowReader) -> RowReader:
            self._tasks[task.name] = (task, read)
            return read

        return decorate

    def names(self) -> list[str]:
        from nanogpt.registry import load_entry_points

        load_entry_points()
        return sorted(self._tasks)

    def get(self, name: str) -> tuple[Task, RowReader]:
        if name not in self.names():
            raise InputError(f"no task {name!r}; the tasks are: {', '.join(self.names())}")
        return self._tasks[name]


TASKS = TaskRegistry()


# The harness's dataset ids (lm_eval 0.4's task yamls). Those that are loading scripts (hellaswag, winogrande)
# are read from the hub's own parquet conversion, which `datasets` >= 4 reads (it runs no scripts).
PARQUET = "refs/convert/parquet"


def hellaswag_preprocess(text: str) -> str:
    """lm-evaluation-harness's hellaswag `preprocess`: WikiHow's bracketed artifacts out, spaces collapsed."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


@TASKS.register(Task(name="hellaswag", hf_id="Rowan/hellaswag", split="validation", revision=PARQUET))
def hellaswag_example(row: dict[str, Any]) -> Example:
    ctx = text_field(row, "ctx_a") + " " + text_field(row, "ctx_b").capitalize()
    endings = row.get("endings")
    if not isinstance(endings, list):
        raise RowError("field 'endings' is missing or not a list" if endings is None else f"field 'endings' is a {type(endings).__name__}, not a list")
    query = hellaswag_preprocess(text_field(row, "activity_label") + ": " + ctx)
    choices = [hellaswag_preprocess(e) if isinstance(e, str) else e for e in endings]
    return Example.shared_context(query, choices, int_field(row, "label"))


def _arc_example(row: dict[str, Any]) -> Example:
    choices = row.get("choices")
    if not isinstance(choices, dict) or not isinstance(choices.get("text"), list) or not isinstance(choices.get("label"), list):
        raise RowError("field 'choices' must be an object with lists 'text' and 'label'")
    answer = text_field(row, "answerKey")
    if answer not in choices["label"]:
        raise RowError(f"its answerKey {answer!r} is not one of its choice labels {choices['label']}")
    if len(choices["label"]) != len(choices["text"]):
        raise RowError(f"it has {len(choices['text'])} choice texts but {len(choices['label'])} labels")
    return Example.shared_context(f"Question: {text_field(row, 'question')}\nAnswer:", choices["text"], choices["label"].index(answer))


TASKS.register(Task(name="arc_easy", hf_id="allenai/ai2_arc", hf_config="ARC-Easy", split="test", revision="main"))(_arc_example)
TASKS.register(Task(name="arc_challenge", hf_id="allenai/ai2_arc", hf_config="ARC-Challenge", split="test", revision="main"))(_arc_example)


@TASKS.register(Task(name="piqa", hf_id="baber/piqa", split="validation", revision="main"))
def piqa_example(row: dict[str, Any]) -> Example:
    question = f"Question: {text_field(row, 'goal')}\nAnswer:"
    return Example.shared_context(question, [text_field(row, "sol1"), text_field(row, "sol2")], int_field(row, "label"))


@TASKS.register(Task(name="winogrande", hf_id="allenai/winogrande", hf_config="winogrande_xl", split="validation",
                     revision=PARQUET, metrics=("acc",)))
def winogrande_example(row: dict[str, Any]) -> Example:
    sentence = text_field(row, "sentence")
    blank = sentence.find("_")
    if blank < 0:
        raise RowError("its sentence has no blank '_' to fill")
    answer = text_field(row, "answer")
    if answer not in ("1", "2"):
        raise RowError(f"its answer {answer!r} is neither '1' nor '2'")
    options = [text_field(row, "option1"), text_field(row, "option2")]
    for i, option in enumerate(options, 1):
        if not option.strip():
            raise RowError(f"option{i} is empty")
    return Example.shared_continuation(
        [sentence[:blank] + option for option in options], sentence[blank + 1:].strip(), int(answer) - 1,
    )


# ------------------------------------------------------------------------------------ reading


def read_rows(task: Task, data: str | None) -> tuple[list[dict[str, Any]], str]:
    """The task's rows, from the JSONL file `data` or its Hugging Face dataset; and where they came from."""
    if data is not None:
        return read_jsonl(data), data
    return read_hub(task), task.source


def read_jsonl(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"--data {path!r}: no such file" if not p.exists() else f"--data {path!r}: not a regular file")
    rows: list[dict[str, Any]] = []
    try:
        with p.open(encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {number}: not JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}, line {number}: a JSON {type(row).__name__}, not an object of the task's fields")
                rows.append(row)
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read --data {path!r}: {e}") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def read_hub(task: Task) -> list[dict[str, Any]]:
    """The task's split from the Hugging Face hub (or the `datasets` cache, offline)."""
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is a dependency
        raise DataError("reading a task from the hub needs the `datasets` package; or give a JSONL file with --data PATH") from None
    try:
        ds = datasets.load_dataset(task.hf_id, task.hf_config, split=task.split, revision=task.revision)
    except Exception as e:  # noqa: BLE001 - offline, missing, renamed: all mean "give the rows another way"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"task {task.name}: cannot read {task.source}: {first}; run once with network access to cache it, "
            "or give its rows as a JSONL file with --data PATH"
        ) from None
    return [dict(row) for row in ds]


def load_examples(name: str, data: str | None = None, *, limit: int | None = None, seed: int | None = None) -> tuple[list[Example], str]:
    """Task `name`'s examples (all, or `limit` of them) and where they came from.

    Without `seed`, the first `limit` rows (as the harness's --limit); with one, `limit` rows drawn
    by that seed, in their dataset order (the fixed subset training evaluates, the same in every run)."""
    task, read = TASKS.get(name)
    rows, where = read_rows(task, data)
    indices = list(range(len(rows)))
    if limit is not None and limit < len(rows):
        indices = sorted(random.Random(seed).sample(indices, limit)) if seed is not None else indices[:limit]
    examples = []
    for i in indices:
        try:
            examples.append(read(rows[i]))
        except RowError as e:
            raise DataError(f"task {name}, {where}: row {i + 1}: {e}") from None
    return examples, where
