"""`nanogpt sample`: run dirs, checkpoints, Hugging Face dirs, eval-only runs and gpt2 names; flags, streaming, exit codes."""

from __future__ import annotations

import contextlib
import io
import json
import random
import shutil
import time
from pathlib import Path

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

from nanogpt.checkpoints.catalog import checkpoint_for
from nanogpt.checkpoints.state import load_checkpoint
from nanogpt.cli import main
from nanogpt.data.tokenizers import gpt2_tokenizer, tokenizer_from_meta
from nanogpt.models.gpt import GPT
from nanogpt.models.weights import from_checkpoint, from_hf
from nanogpt.evaluation.sample import SEPARATOR
from nanogpt.models.generation import IncrementalDecoder, generate_texts
from nanogpt.models.loading import load_model
from tests.tinyrun import WORDS, env_with_plugins, nanogpt, only_run_dir, tiny_spec



def sample(capsys, *args: str) -> tuple[int, str, str]:
    """`nanogpt sample ARGS` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(["sample", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def split_samples(stdout: str) -> list[str]:
    """The samples of the verb's stdout, each without its closing newline."""
    assert stdout.endswith("\n")
    return stdout[:-1].split(f"\n{SEPARATOR}\n")


def greedy_continuation(model: GPT, ids: list[int], n: int) -> list[int]:
    """The argmax continuation, one full forward of the cropped context per token (no cache, no sampling code)."""
    seq = list(ids)
    with torch.no_grad():
        for _ in range(n):
            context = torch.tensor([seq[-model.config.block_size:]])
            logits, _ = model(context, all_logits=True)
            seq.append(int(logits[0, -1].argmax()))
    return seq[len(ids):]


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory) -> Path:
    """A tiny GPT-2-BPE run on short documents, each followed by end-of-text, so samples contain it."""
    tmp = tmp_path_factory.mktemp("bpe")
    rng = random.Random(0)
    with open(tmp / "docs.jsonl", "w", encoding="utf-8") as f:
        for _ in range(3000):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
            f.write(json.dumps({"text": f"{rng.choice(['KING', 'QUEEN'])}: {words}."}) + "\n")
    spec = tiny_spec(
        tmp, name="bpe",
        data={"dataset": "tiny_bpe", "source": f"file:{tmp / 'docs.jsonl'}", "tokenizer": "gpt2", "split": "random"},
    )
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    return only_run_dir(tmp / "runs", "bpe")


def vocabulary(run_dir: Path) -> set[str]:
    spec = json.loads((run_dir / "manifest.json").read_text())["spec"]["data"]
    meta = json.loads((Path(spec["data_dir"]) / spec["dataset"] / "meta.json").read_text())
    return set(meta["chars"])


# -------------------------------------------------------------------------------- run dirs


def test_char_samples_from_run_dir(reference_run, capsys):
    """A char run samples the requested number of texts in its own vocabulary, each starting with the prompt."""
    code, out, err = sample(capsys, str(reference_run.dir), "--num-samples", "3", "--max-new-tokens", "40", "--start", "KING:")
    assert code == 0, err
    samples = split_samples(out)
    assert len(samples) == 3
    for text in samples:
        assert text.startswith("KING:") and len(text) == len("KING:") + 40  # one character per token
        assert set(text) <= vocabulary(reference_run.dir)
    assert "char tokenizer" in err and "sampling from" in err


def test_checkpoint_records_its_tokenizer(reference_run):
    """The runner stores the dataset's tokenizer in each checkpoint, enough to rebuild it alone."""
    state = load_checkpoint(checkpoint_for(reference_run.dir, "latest"))
    record = state["tokenizer"]
    assert record["tokenizer"] == "char" and set(record["chars"]) == vocabulary(reference_run.dir)
    assert tokenizer_from_meta(record).vocab_size == state["model_arch"]["vocab_size"]


def test_same_seed_same_text_other_seed_other_text(reference_run, capsys):
    """The same seed gives the same samples; another seed gives others."""
    args = [str(reference_run.dir), "--num-samples", "2", "--max-new-tokens", "60"]
    first = sample(capsys, *args, "--seed", "5")
    again = sample(capsys, *args, "--seed", "5")
    other = sample(capsys, *args, "--seed", "6")
    assert first[0] == again[0] == other[0] == 0
    assert first[1] == again[1]
    assert first[1] != other[1]


def test_greedy_is_the_argmax_continuation(reference_run, capsys):
    """--temperature 0 gives the model's argmax continuation, the same in every sample and for any seed."""
    prompt = "QUEEN:\nthe king"
    args = [str(reference_run.dir), "--temperature", "0", "--max-new-tokens", "50", "--start", prompt, "--num-samples", "2"]
    code, out, _ = sample(capsys, *args, "--seed", "1")
    assert code == 0
    assert sample(capsys, *args, "--seed", "2")[1] == out
    loaded = load_model(str(reference_run.dir))
    expected = loaded.tokenizer.decode(greedy_continuation(loaded.model, loaded.tokenizer.encode(prompt), 50))
    assert split_samples(out) == [prompt + expected] * 2


def test_start_from_file(reference_run, capsys, tmp_path):
    """--start FILE:path prompts with the file's text, exactly as giving that text does."""
    prompt = "LORD:\nthe realm and "
    (tmp_path / "prompt.txt").write_text(prompt, encoding="utf-8")
    args = [str(reference_run.dir), "--max-new-tokens", "30", "--num-samples", "2"]
    from_file = sample(capsys, *args, "--start", f"FILE:{tmp_path / 'prompt.txt'}")
    inline = sample(capsys, *args, "--start", prompt)
    assert from_file[0] == 0 and from_file[1] == inline[1]
    assert all(s.startswith(prompt) for s in split_samples(from_file[1]))


def test_start_from_file_lowercase(reference_run, capsys, tmp_path):
    """--start file:path (as data.source spells it) reads the file too, not the words 'file:...'."""
    (tmp_path / "prompt.txt").write_text("KING:", encoding="utf-8")
    args = [str(reference_run.dir), "--num-samples", "1", "--max-new-tokens", "8"]
    code, from_file, _ = sample(capsys, *args, "--start", f"file:{tmp_path / 'prompt.txt'}")
    assert code == 0 and from_file == sample(capsys, *args, "--start", "KING:")[1]
    assert from_file.startswith("KING:")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_a_gpu_names_the_flag(reference_run, capsys):
    """--device cuda on a machine without CUDA blames --device as given, not a spec's system.device."""
    code, out, err = sample(capsys, str(reference_run.dir), "--device", "cuda")
    assert code == 2 and out == ""
    assert err == "error: --device is 'cuda' but this machine has no CUDA device (use \"auto\" or \"cpu\")\n"


def test_checkpoint_best_and_latest(reference_run, capsys, tmp_path):
    """--checkpoint best loads the lowest-val-loss checkpoint the manifest lists, latest the last one."""
    run = tmp_path / "run"
    shutil.copytree(reference_run.dir, run)
    manifest = json.loads((run / "manifest.json").read_text())
    steps = sorted(e["step"] for e in manifest["checkpoints"])
    assert len(steps) >= 2
    for entry in manifest["checkpoints"]:  # make the earliest kept checkpoint the best one
        entry["val_loss"] = 0.5 if entry["step"] == steps[0] else 1.0
    (run / "manifest.json").write_text(json.dumps(manifest))
    args = [str(run), "--temperature", "0", "--max-new-tokens", "40", "--num-samples", "1"]
    best = sample(capsys, *args)
    latest = sample(capsys, *args, "--checkpoint", "latest")
    assert f"ckpt-{steps[0]:08d}.pt" in best[2] and f"ckpt-{steps[-1]:08d}.pt" in latest[2]
    for (_, out, _), step in ((best, steps[0]), (latest, steps[-1])):
        model = from_checkpoint(str(run / "checkpoints" / f"ckpt-{step:08d}.pt"))
        tok = load_model(str(run)).tokenizer
        assert out == "\n" + tok.decode(greedy_continuation(model, tok.encode("\n"), 40)) + "\n"


def test_stop_at_eot_with_bpe(bpe_run, capsys):
    """With --stop-at-eot each BPE sample ends just before its first end-of-text; without, the token shows."""
    args = [str(bpe_run), "--max-new-tokens", "40", "--num-samples", "3", "--start", "KING:"]
    code, full, err = sample(capsys, *args)
    assert code == 0 and "gpt2 tokenizer" in err
    code, stopped, _ = sample(capsys, *args, "--stop-at-eot")
    assert code == 0
    full_samples, stopped_samples = split_samples(full), split_samples(stopped)
    assert sum("<|endoftext|>" in s for s in full_samples) >= 2  # the model learned to end documents
    for whole, cut in zip(full_samples, stopped_samples, strict=True):
        assert "<|endoftext|>" not in cut
        assert cut == whole.split("<|endoftext|>")[0]


def test_runner_samples_use_the_same_code(reference_run, capsys):
    """The sample the runner logged at its last evaluation is what the verb prints for the same seed and settings."""
    logged = reference_run.stdout.split("sample:\n", 1)[1]
    # the runner samples with seed + iteration, temperature 0.8, top-k 200, from no prompt (a newline here)
    code, out, _ = sample(
        capsys, str(reference_run.dir), "--checkpoint", "latest", "--seed", str(7 + 40), "--num-samples", "1",
        "--max-new-tokens", "16", "--start", "", "--temperature", "0.8", "--top-k", "200",
    )
    assert code == 0 and out == logged


def test_stdout_holds_only_the_samples(reference_run):
    """In a subprocess, stdout is exactly the samples (what generate_texts returns) and the rest goes to stderr."""
    proc = nanogpt("sample", str(reference_run.dir), "--num-samples", "2", "--max-new-tokens", "25", "--start", "KING:", "--seed", "3")
    assert proc.returncode == 0, proc.stderr
    loaded = load_model(str(reference_run.dir))
    texts = generate_texts(
        loaded.model, loaded.tokenizer, start="KING:", num_samples=2, max_new_tokens=25, seed=3,
        device=torch.device("cpu"), temperature=0.8, top_k=200,
    )
    assert proc.stdout == f"KING:{texts[0]}\n{SEPARATOR}\nKING:{texts[1]}\n"
    assert "sampling from" in proc.stderr and "sampling from" not in proc.stdout


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--max-new-tokens", "-1"], "--max-new-tokens must be at least 0"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--temperature", "-0.5"], "--temperature must be 0"),
        (["--num-samples", "0"], "--num-samples must be at least 1"),
        (["--top-k", "-3"], "--top-k must be at least 1"),
        (["--start", "FILE:"], "needs a path after 'FILE:'"),
        (["--start", "FILE:/no/such/prompt.txt"], "no such file '/no/such/prompt.txt'"),
        (["--start", "\u00ff"], "is not in the dataset's vocabulary"),
        (["--device", "tpu"], "--device must be"),
        (["--checkpoint", "middle"], "invalid choice"),
    ],
)
def test_bad_flags_exit_2(reference_run, capsys, flags, message):
    """Each bad flag exits 2 with a message naming it, and prints nothing on stdout."""
    code, out, err = sample(capsys, str(reference_run.dir), *flags)
    assert code == 2 and message in err and out == ""


def test_bad_flag_has_no_traceback(reference_run):
    """A bad flag in a real process exits 2 with one error line and no traceback."""
    proc = nanogpt("sample", str(reference_run.dir), "--top-p", "2")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stdout == ""
    assert "error: --top-p must be in (0, 1]" in proc.stderr


# ----------------------------------------------------------------------- other sources


def test_from_checkpoint_file(reference_run, capsys):
    """A checkpoint file alone samples with the tokenizer it records, as its run dir does."""
    ckpt = checkpoint_for(reference_run.dir, "best")
    args = ["--temperature", "0", "--max-new-tokens", "30", "--num-samples", "1"]
    code, out, err = sample(capsys, str(ckpt), *args)
    assert code == 0 and f"checkpoint {ckpt}" in err
    assert out == sample(capsys, str(reference_run.dir), *args)[1]


def test_older_checkpoint_finds_its_dataset(reference_run, capsys, tmp_path):
    """A checkpoint without a tokenizer record falls back to its spec's dataset, or to --tokenizer-meta (a dataset folder)."""
    state = load_checkpoint(checkpoint_for(reference_run.dir, "best"))
    del state["tokenizer"]
    torch.save(state, tmp_path / "old.pt")
    args = ["--temperature", "0", "--max-new-tokens", "30", "--num-samples", "1"]
    code, out, _ = sample(capsys, str(tmp_path / "old.pt"), *args)
    assert code == 0 and out == sample(capsys, str(reference_run.dir), *args)[1]
    state["spec"]["data"]["data_dir"] = str(tmp_path / "nowhere")
    torch.save(state, tmp_path / "lost.pt")
    code, out, err = sample(capsys, str(tmp_path / "lost.pt"), *args)
    assert code == 2 and "records no tokenizer" in err and "--tokenizer-meta" in err and out == ""
    dataset = reference_run.tmp / "data" / "tiny_char"
    code, out, _ = sample(capsys, str(tmp_path / "lost.pt"), *args, "--tokenizer-meta", str(dataset))
    assert code == 0 and out == sample(capsys, str(reference_run.dir), *args)[1]


def test_nanogpt_checkpoint_with_tokenizer_meta(reference_run, capsys, tmp_path):
    """A nanoGPT ckpt.pt of a char model needs --tokenizer-meta (GPT-2's BPE does not fit); with it, it samples like ours."""
    state = load_checkpoint(checkpoint_for(reference_run.dir, "best"))
    arch = state["model_arch"]
    nano = {
        "model_args": {k: arch[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")} | {"vocab_size": arch["padded_vocab_size"]},
        "model": {f"_orig_mod.{k}": v for k, v in state["model"].items()},
        "iter_num": 40,
    }
    torch.save(nano, tmp_path / "ckpt.pt")
    args = ["--temperature", "0", "--max-new-tokens", "30", "--num-samples", "1"]
    code, out, err = sample(capsys, str(tmp_path / "ckpt.pt"), *args)
    assert code == 2 and "--tokenizer-meta" in err and out == ""
    spec = state["spec"]["data"]
    meta = Path(spec["data_dir"]) / spec["dataset"] / "meta.json"
    code, out, err = sample(capsys, str(tmp_path / "ckpt.pt"), *args, "--tokenizer-meta", str(meta))
    assert code == 0 and "nanoGPT checkpoint" in err
    assert out == sample(capsys, str(reference_run.dir), *args)[1]


def test_from_hf_dir_matches_transformers(hf_dir, capsys):
    """A local Hugging Face GPT-2 samples with GPT-2's BPE; greedy text equals transformers' greedy generate."""
    prompt = "Hello world, this is"
    code, out, err = sample(capsys, str(hf_dir), "--temperature", "0", "--max-new-tokens", "20", "--num-samples", "1", "--start", prompt)
    assert code == 0 and "gpt2 tokenizer" in err
    tok = gpt2_tokenizer()
    ids = torch.tensor([tok.encode(prompt)])
    hf = transformers.GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()
    theirs = hf.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=50256, attention_mask=torch.ones_like(ids))
    assert out == prompt + tok.decode(theirs[0, ids.size(1):].tolist()) + "\n"


def test_from_eval_only_run_dir(reference_run, capsys, tmp_path):
    """A run without checkpoints (eval_only) samples from the model its spec's init_from names, with the run's tokenizer."""
    source = checkpoint_for(reference_run.dir, "best")
    # the spec is written here but reads the reference's prepared dataset (reading leaves it as it is)
    shared_data = {"data_dir": str(reference_run.tmp / "data"), "source": f"file:{reference_run.tmp / 'corpus.txt'}"}
    spec = tiny_spec(tmp_path, name="evaluated", model={"init_from": str(source)}, train={"eval_only": True},
                     data=shared_data, logging={"out_dir": str(tmp_path / "runs"), "samples": 0})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(spec)]) == 0
    evaluated = only_run_dir(tmp_path / "runs", "evaluated")
    assert not (evaluated / "checkpoints").exists()
    args = ["--temperature", "0", "--max-new-tokens", "30", "--num-samples", "1"]
    code, out, err = sample(capsys, str(evaluated), *args)
    assert code == 0 and "no checkpoint: model.init_from" in err
    assert out == sample(capsys, str(source), *args)[1]


def test_scratch_run_without_checkpoint_is_refused(reference_run, capsys, tmp_path):
    """A run with neither a checkpoint nor pretrained weights says there is nothing to sample, exit 2."""
    run = tmp_path / "run"
    shutil.copytree(reference_run.dir, run)
    shutil.rmtree(run / "checkpoints")
    code, out, err = sample(capsys, str(run))
    assert code == 2 and "has no checkpoint" in err and "scratch" in err and out == ""


def test_gpt2_offline_is_a_clear_error(tmp_path):
    """`gpt2` by name without the network fails with a message naming the model and the hub, no traceback."""
    proc = nanogpt("sample", "gpt2", "--max-new-tokens", "5", cwd=tmp_path, env=env_with_plugins(HF_HUB_OFFLINE="1"), timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "'gpt2'" in proc.stderr and "Hugging Face hub" in proc.stderr and "Traceback" not in proc.stderr


def test_gpt2_with_an_unresolvable_hub_fails_at_once(tmp_path, monkeypatch):
    """When the hub's host cannot even be looked up, weights not in the cache fail at once, naming
    HF_HUB_OFFLINE, instead of after the hub client's retries (~23 s)."""
    from nanogpt.errors import InputError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.invalid")
    start = time.perf_counter()
    with pytest.raises(InputError) as e:
        from_hf("gpt2")
    assert time.perf_counter() - start < 5
    assert "hub.invalid cannot be looked up" in str(e.value) and "HF_HUB_OFFLINE=1" in str(e.value)


def test_unknown_source_exit_2(capsys, tmp_path):
    """A source that is no file, directory or GPT-2 name, or a directory of something else, exits 2 naming it."""
    code, _, err = sample(capsys, str(tmp_path / "missing"))
    assert code == 2 and "no such file or directory" in err
    code, _, err = sample(capsys, str(tmp_path))
    assert code == 2 and "neither a run" in err


# ------------------------------------------------------------------------------ streaming


@given(st.lists(st.integers(0, 50256), max_size=40))
def test_text_stream_adds_up_to_the_decoded_text(ids):
    """Streamed pieces hold whole characters only and join to the decoding of all ids, even mid-character BPE tokens."""
    tok = gpt2_tokenizer()
    pieces: list[str] = []
    stream = IncrementalDecoder(tok, pieces.append)
    for i in ids:
        stream.push(i)
    stream.close()
    assert "".join(pieces) == tok.decode(ids)


def test_multibyte_characters_stream_whole():
    """A character split over two BPE tokens is passed on once, whole."""
    tok = gpt2_tokenizer()
    ids = tok.encode("日本語のテキスト")
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids)  # some token ends mid-character
    pieces: list[str] = []
    stream = IncrementalDecoder(tok, pieces.append)
    for i in ids:
        stream.push(i)
    stream.close()
    assert "".join(pieces) == "日本語のテキスト" and not any("\ufffd" in p for p in pieces)

