"""Multiple-choice evaluation: scores against log-likelihoods summed by hand, batching and ranks, the tasks' prompts, bad rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nanogpt.cli import main
from nanogpt.data.tokenizers import CharTokenizer, gpt2_tokenizer
from nanogpt.errors import DataError, InputError
from nanogpt.models.multiple_choice import (
    encode_pair,
    evaluate_tasks,
    score_examples,
)
from nanogpt.data.tasks import TASKS, Example, hellaswag_preprocess, load_examples
from nanogpt.models.gpt import GPT, GPTConfig

FIXTURES = Path(__file__).parent.parent / "fixtures" / "tasks"
TASK_NAMES = ["hellaswag", "arc_easy", "piqa", "winogrande"]


def fixture(task: str) -> str:
    return str(FIXTURES / f"{task}.jsonl")


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    # a random model's choices are all near-equal; a larger init spreads them so predictions differ by choice
    m = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=256, vocab_size=50257)).eval()
    with torch.no_grad():
        m.lm_head.weight.mul_(20)
    return m


def by_hand(model, tokenizer, context: str, continuation: str) -> float:
    """The log-likelihood of `continuation` after `context`, from one forward of the whole text, summed in Python."""
    context_ids = tokenizer.encode(context)
    whole = tokenizer.encode(context + continuation)
    assert whole[:len(context_ids)] == context_ids  # the fixtures' contexts end where a token does
    ids = torch.tensor([whole])
    with torch.no_grad():
        logits, _ = model(ids, all_logits=True)
    logprobs = torch.log_softmax(logits[0].double(), dim=-1)
    return sum(float(logprobs[t - 1, whole[t]]) for t in range(len(context_ids), len(whole)))


@pytest.mark.parametrize("task", TASK_NAMES)
def test_scores_are_the_continuations_summed_log_likelihoods(model, tokenizer, task):
    examples, _ = load_examples(task, fixture(task), limit=6)
    scored = score_examples(model, tokenizer, examples, batch_size=16)
    for ex, s in zip(examples, scored):
        expected = [by_hand(model, tokenizer, c, k) for c, k in zip(ex.contexts, ex.continuations)]
        np.testing.assert_allclose(s.loglikelihoods, expected, rtol=1e-5, atol=1e-4)
        assert s.pred == int(np.argmax(expected))
        assert s.pred_norm == int(np.argmax(np.array(expected) / np.array(ex.choice_lengths)))
        assert s.label == ex.label


def test_accuracies_count_the_right_predictions(model, tokenizer):
    (result,) = evaluate_tasks(model, tokenizer, ["hellaswag"], data={"hellaswag": fixture("hellaswag")})
    assert result.examples == 24
    assert result.acc == sum(s.pred == s.label for s in result.per_example) / 24
    assert result.acc_norm == sum(s.pred_norm == s.label for s in result.per_example) / 24
    # the random model is no oracle: acc and acc_norm are different readings of the same scores
    assert {s.pred for s in result.per_example} != {s.label for s in result.per_example} or result.acc < 1


@pytest.mark.parametrize("task", TASK_NAMES)
def test_batched_equals_one_by_one(model, tokenizer, task):
    examples, _ = load_examples(task, fixture(task))
    one = score_examples(model, tokenizer, examples, batch_size=1)
    many = score_examples(model, tokenizer, examples, batch_size=64)
    assert [s.pred for s in one] == [s.pred for s in many]
    assert [s.pred_norm for s in one] == [s.pred_norm for s in many]
    flat = lambda scored: [v for s in scored for v in s.loglikelihoods]  # noqa: E731
    np.testing.assert_allclose(flat(one), flat(many), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_share_out_batches_and_gather_what_one_process_scores(model, tokenizer, world_size):
    examples, _ = load_examples("hellaswag", fixture("hellaswag"))
    alone = score_examples(model, tokenizer, examples, batch_size=8)
    parts = [score_examples(model, tokenizer, examples, batch_size=8, rank=r, world_size=world_size, gather=lambda mine: [mine])
             for r in range(world_size)]
    # each rank scored only its own share...
    assert sorted(s.index for part in parts for s in part) == list(range(len(examples)))
    assert all(0 < len(part) < len(examples) for part in parts)
    # ...and gathered, they are one process's results exactly (the same batches, so the same numbers)
    gathered = score_examples(model, tokenizer, examples, batch_size=8, rank=0, world_size=world_size,
                              gather=lambda mine: parts)
    assert gathered == alone


def test_trailing_spaces_of_a_context_move_to_the_continuation(tokenizer):
    context, continuation = encode_pair(tokenizer, "Question: why?\nAnswer: ", "because")
    assert context == tokenizer.encode("Question: why?\nAnswer:")
    assert continuation == tokenizer.encode("Question: why?\nAnswer: because")[len(context):]
    assert tokenizer.decode(continuation) == " because"


def test_an_empty_context_is_the_end_of_text_token(tokenizer):
    assert encode_pair(tokenizer, "", "Hello") == ([tokenizer.eot_id], tokenizer.encode("Hello"))
    with pytest.raises(InputError, match="end-of-text"):
        encode_pair(CharTokenizer("Helo"), "", "Hello")


def test_long_pairs_keep_their_last_tokens(model, tokenizer):
    """A pair longer than the block keeps its last block_size + 1 tokens, as the harness truncates."""
    short = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=50257)).eval()
    short.load_state_dict({k: v[:16] if k == "transformer.wpe.weight" else v for k, v in model.state_dict().items()}, strict=False)
    context = " ".join(["word"] * 40)
    ex = Example.shared_context(context, ["one two three", "four"], 0)
    (s,) = score_examples(short, tokenizer, [ex])
    for i, cont in enumerate(ex.continuations):
        ids = (tokenizer.encode(context) + tokenizer.encode(cont))[-17:]
        n = len(tokenizer.encode(cont))
        with torch.no_grad():
            logits, _ = short(torch.tensor([ids[:-1]]), all_logits=True)
        lp = torch.log_softmax(logits[0].double(), -1)
        assert s.loglikelihoods[i] == pytest.approx(sum(float(lp[t - 1, ids[t]]) for t in range(len(ids) - n, len(ids))), abs=1e-4)


# ---------------------------------------------------------------------------------- the tasks


def test_hellaswag_prompt_is_the_harness_s():
    row = json.loads((FIXTURES / "hellaswag.jsonl").read_text().splitlines()[0])
    (ex,), _ = load_examples("hellaswag", fixture("hellaswag"), limit=1)
    assert ex.contexts[0] == "Removing ice from car: How to removing ice from car. Gather what you need. make sure everything is within reach"
    # the harness strips before it removes "[substeps]", so the space after it stays (its quirk, kept)
    assert ex.continuations[0] == "  paints the last board white and steps back."
    assert ex.continuations[1] == " presses the iron along the sleeve.. Clean up afterwards."
    assert ex.label == int(row["label"])
    assert hellaswag_preprocess("  a [b] c  d ") == "a c d"


def test_arc_and_piqa_and_winogrande_prompts():
    (arc,), _ = load_examples("arc_easy", fixture("arc_easy"), limit=1)
    row = json.loads((FIXTURES / "arc_easy.jsonl").read_text().splitlines()[0])
    assert arc.contexts[0] == f"Question: {row['question']}\nAnswer:"
    assert arc.continuations == tuple(" " + t for t in row["choices"]["text"])
    assert arc.label == row["choices"]["label"].index(row["answerKey"])

    (piqa,), _ = load_examples("piqa", fixture("piqa"), limit=1)
    row = json.loads((FIXTURES / "piqa.jsonl").read_text().splitlines()[0])
    assert piqa.continuations == (" " + row["sol1"], " " + row["sol2"]) and piqa.label == row["label"]

    (wino,), _ = load_examples("winogrande", fixture("winogrande"), limit=1)
    assert wino.contexts == ("The trophy didn't fit into the suitcase because the trophy",
                             "The trophy didn't fit into the suitcase because the suitcase")
    assert wino.continuations == (" was too big.",) * 2 and wino.label == 0
    assert TASKS.get("winogrande")[0].metrics == ("acc",)


def test_a_seeded_limit_is_a_fixed_subset_in_dataset_order():
    a, _ = load_examples("hellaswag", fixture("hellaswag"), limit=5, seed=7)
    b, _ = load_examples("hellaswag", fixture("hellaswag"), limit=5, seed=7)
    first, _ = load_examples("hellaswag", fixture("hellaswag"), limit=5)
    everything, _ = load_examples("hellaswag", fixture("hellaswag"))
    assert a == b and a != first and len(a) == 5
    positions = [everything.index(ex) for ex in a]
    assert positions == sorted(positions)


BAD_ROWS = [
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "endings": ["b", "c"], "label": "0"}, "no field 'ctx_b'"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": [], "label": "0"}, "0 choice"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["c", "d"], "label": "2"}, "label 2 is not"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["c", " "], "label": "0"}, "choice 1 is empty"),
    ("hellaswag", {"activity_label": "x", "ctx_a": "a", "ctx_b": "b", "endings": ["c", "d"], "label": ""}, "not an integer label"),
    ("piqa", {"goal": "g", "sol1": "a", "sol2": "b", "label": -1}, "label -1 is not"),
    ("piqa", {"goal": "g", "sol1": "a", "sol2": 3, "label": 0}, "'sol2' is a int"),
    ("arc_easy", {"question": "q", "choices": {"text": ["a", "b"], "label": ["A", "B"]}, "answerKey": "C"}, "answerKey 'C'"),
    ("arc_easy", {"question": "q", "choices": ["a", "b"], "answerKey": "A"}, "'choices' must be an object"),
    ("winogrande", {"sentence": "no blank here", "option1": "a", "option2": "b", "answer": "1"}, "no blank"),
    ("winogrande", {"sentence": "a _ b", "option1": "a", "option2": "b", "answer": "3"}, "neither '1' nor '2'"),
]


@pytest.mark.parametrize(("task", "row", "message"), BAD_ROWS)
def test_bad_rows_are_refused_naming_the_row(tmp_path, task, row, message):
    good = (FIXTURES / f"{task}.jsonl").read_text().splitlines()[0]
    path = tmp_path / "rows.jsonl"
    path.write_text(good + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=f"task {task}, .*rows.jsonl: row 2: .*{message}"):
        load_examples(task, str(path))


def test_unreadable_files_and_unknown_tasks_are_clear_errors(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"goal": "g"}\nnot json\n')
    with pytest.raises(DataError, match="line 2: not JSON"):
        load_examples("piqa", str(path))
    path.write_text("\n")
    with pytest.raises(DataError, match="no rows"):
        load_examples("piqa", str(path))
    with pytest.raises(InputError, match="no such file"):
        load_examples("piqa", str(tmp_path / "missing.jsonl"))
    with pytest.raises(InputError, match="no task 'mmlu'; the tasks are: arc_challenge, arc_easy, hellaswag"):
        TASKS.get("mmlu")


# ------------------------------------------------------------------------------------ the verb


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["evaluate", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_verb_prints_each_task_s_accuracies(capsys, hf_dir, tokenizer):
    args = [str(hf_dir), "--tasks", "hellaswag,winogrande", "--device", "cpu", "--limit", "10",
            "--data", f"hellaswag={fixture('hellaswag')}", "--data", f"winogrande={fixture('winogrande')}"]
    code, out, err = run_cli(capsys, *args, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert set(report["tasks"]) == {"hellaswag", "winogrande"}
    assert report["tasks"]["hellaswag"]["examples"] == 10
    assert set(report["tasks"]["winogrande"]) == {"source", "examples", "acc"}

    from nanogpt.models.loading import load_model

    loaded = load_model(str(hf_dir))
    (expected,) = evaluate_tasks(loaded.model, loaded.tokenizer, ["hellaswag"], data={"hellaswag": fixture("hellaswag")}, limit=10)
    assert report["tasks"]["hellaswag"]["acc"] == expected.acc
    assert report["tasks"]["hellaswag"]["acc_norm"] == expected.acc_norm

    code, out, _ = run_cli(capsys, *args)
    assert code == 0
    assert out.splitlines()[1].split() == ["task", "examples", "acc", "acc_norm"]
    assert out.splitlines()[3].split()[:2] == ["winogrande", "10"]


@pytest.mark.parametrize(("args", "message"), [
    (["--tasks", "mmlu"], "no task 'mmlu'"),
    (["--tasks", "piqa,hellaswag", "--data", "x.jsonl"], "say whose file it is"),
    (["--tasks", "piqa", "--data", "arc_easy=x.jsonl"], "not one of --tasks"),
    (["--tasks", "piqa", "--limit", "0"], "--limit must be at least 1"),
    (["--tasks", "piqa", "--data", "missing.jsonl"], "no such file"),
])
def test_the_verb_refuses_bad_arguments_with_exit_2(capsys, hf_dir, args, message):
    code, out, err = run_cli(capsys, str(hf_dir), *args, "--device", "cpu")
    assert code == 2 and message in err and "Traceback" not in err


def test_the_harness_missing_is_said_with_the_install_line(capsys, hf_dir, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # an import of it now fails, as where it is not installed
    code, _, err = run_cli(capsys, str(hf_dir), "--harness", "hellaswag", "--device", "cpu")
    assert code == 2 and "pip install 'nanogpt[eval]'" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, str(hf_dir), "--device", "cpu")
    assert code == 2 and "give --tasks (scored here) or --harness" in err
