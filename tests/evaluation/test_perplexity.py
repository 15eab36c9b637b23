"""Zero-shot perplexity: sliding windows against transformers as the oracle, coverage, short texts, bits per byte, datasets."""

from __future__ import annotations

import json
import math

import pytest
import torch
import transformers
from hypothesis import given
from hypothesis import strategies as st

from nanogpt.checkpoints.state import FORMAT
from nanogpt.cli import main
from nanogpt.data.tokenizers import CharTokenizer, gpt2_tokenizer
from nanogpt.evaluation.perplexity import TokenSequence, count_windows, score_sequence, sliding_windows
from nanogpt.models.gpt import GPT, GPTConfig
from nanogpt.models.weights import from_hf
from nanogpt.checkpoints.state import tokenizer_record


TEXT = (
    "Zero-shot perplexity asks how surprised a model is by text it never saw. "
    "Naïve café owners — and their crème brûlée — count as bytes, not characters: "
    "GPT-2's byte-level BPE splits “quotes” and 日本語 inside characters. "
) * 3


@pytest.fixture(scope="module")
def hf_model(hf_dir):
    return transformers.GPT2LMHeadModel.from_pretrained(hf_dir, local_files_only=True).eval()


@pytest.fixture(scope="module")
def ours(hf_dir) -> GPT:
    return from_hf(str(hf_dir)).eval()


def hf_guide_nll(hf, ids: torch.Tensor, max_length: int, stride: int) -> tuple[float, int]:
    """transformers' documented sliding-window perplexity loop ("Perplexity of fixed-length models"): (NLL sum, targets)."""
    seq_len = ids.size(0)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + max_length, seq_len)
        trg_len = end - prev_end
        input_ids = ids[begin:end][None]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            loss = hf(input_ids, labels=target_ids).loss
        valid = int((target_ids[:, 1:] != -100).sum())  # the model shifts labels left by one
        nll_sum += loss.double().item() * valid
        n_tokens += valid
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, n_tokens


def cli_json(capsys, *args: str) -> dict:
    capsys.readouterr()
    code = main(["perplexity", *args, "--json", "--device", "cpu"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def random_ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 50257, (n,), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------- the oracle


@pytest.mark.parametrize("stride", [16, 8, 5, 1])
def test_sliding_window_nll_equals_transformers(ours, hf_model, stride):
    """Our windowed NLL equals transformers' documented loop (its windows of block_size + 1 tokens) for any stride."""
    block = 16
    ids = random_ids(block + 1 + 7 * stride)  # a length the guide's windows tile exactly
    expected, n = hf_guide_nll(hf_model, ids, block + 1, stride)
    got = score_sequence(ours, TokenSequence(ids.numpy()), block_size=block, stride=stride, batch_size=3)
    assert got.tokens == n == len(ids) - 1
    assert got.nll == pytest.approx(expected, rel=1e-5)


def test_last_window_is_the_last_block_of_tokens(ours, hf_model):
    """Where the stride does not tile the text, the last window is its last block_size + 1 tokens and scores only new targets."""
    block, stride = 16, 8
    tiled = block + 1 + 4 * stride
    ids = random_ids(tiled + 3, seed=1)
    head, _ = hf_guide_nll(hf_model, ids[:tiled], block + 1, stride)
    last = ids[-(block + 1):][None]
    target = last.clone()
    target[:, :-3] = -100  # only the 3 targets past the tiled part
    with torch.no_grad():
        tail = hf_model(last, labels=target).loss.double().item() * 3
    got = score_sequence(ours, TokenSequence(ids.numpy()), block_size=block, stride=stride)
    assert got.tokens == len(ids) - 1
    assert got.nll == pytest.approx(head + tail, rel=1e-5)


@given(length=st.integers(0, 300), block=st.integers(1, 40), data=st.data())
def test_every_target_is_scored_once(length, block, data):
    """The windows score targets 1..length-1 exactly once, all as wide, with block_size - stride + 1 .. block_size of context."""
    stride = data.draw(st.integers(1, block))
    windows = list(sliding_windows(length, block, stride))
    assert len(windows) == count_windows(length, block, stride)
    scored = [j for w in windows for j in range(w.score_from, w.end)]
    assert scored == list(range(1, length))
    for k, w in enumerate(windows):
        assert w.end - w.begin == min(length, block + 1) and w.begin >= 0 and w.end <= length
        assert w.begin + 1 <= w.score_from < w.end
        for j in range(w.score_from, w.end):
            context = j - w.begin
            assert context <= block
            if k > 0:
                assert context >= block - stride + 1
    if windows:
        assert windows[-1].end == length


# --------------------------------------------------------------------------- the verb


def test_short_text_is_one_window(hf_dir, hf_model, capsys, tmp_path):
    """A text shorter than the block is one window, preceded by end-of-text, and scores every one of its tokens."""
    text = "A short text, shorter than the block."
    (tmp_path / "short.txt").write_text(text, encoding="utf-8")
    r = cli_json(capsys, str(hf_dir), str(tmp_path / "short.txt"))
    ids = gpt2_tokenizer().encode(text)
    assert len(ids) + 1 < 64
    assert r["tokens"] == r["tokens_scored"] == len(ids) and r["windows"] == 1 and r["eot_prefix"] is True
    seq = torch.tensor([[50256, *ids]])
    with torch.no_grad():
        expected = hf_model(seq, labels=seq).loss.item()
    assert r["nll"] == pytest.approx(expected, rel=1e-5)
    assert r["block_size"] == 64 and r["stride"] == 32  # the model's block, and half of it


def test_bits_per_byte_and_perplexity_are_consistent(hf_dir, capsys, tmp_path):
    """Bits per byte is the summed NLL in bits over the text's UTF-8 bytes; perplexity is exp(mean NLL)."""
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    r = cli_json(capsys, str(hf_dir), str(tmp_path / "text.txt"), "--block-size", "24", "--stride", "7", "--batch-size", "5")
    tokens = len(gpt2_tokenizer().encode(TEXT))
    assert r["tokens"] == r["tokens_scored"] == tokens and r["windows"] == count_windows(tokens + 1, 24, 7)
    assert r["bytes"] == len(TEXT.encode("utf-8")) > len(TEXT)
    assert r["nll"] == pytest.approx(r["nll_sum"] / r["tokens_scored"], rel=1e-12)
    assert r["perplexity"] == pytest.approx(math.exp(r["nll"]), rel=1e-12)
    assert r["bits_per_byte"] == pytest.approx(r["nll_sum"] / math.log(2) / r["bytes"], rel=1e-12)


def test_deterministic_and_batch_independent(hf_dir, capsys, tmp_path):
    """The same flags give identical figures; another batch size only changes float rounding."""
    (tmp_path / "text.txt").write_text(TEXT, encoding="utf-8")
    args = [str(hf_dir), str(tmp_path / "text.txt"), "--block-size", "20", "--stride", "10"]
    first = cli_json(capsys, *args, "--batch-size", "2")
    assert cli_json(capsys, *args, "--batch-size", "2") == first
    other = cli_json(capsys, *args, "--batch-size", "7")
    assert other["nll_sum"] == pytest.approx(first["nll_sum"], rel=1e-6)


def test_char_stream_without_end_of_text(capsys, tmp_path):
    """With a char tokenizer that has no end-of-text, the first character is context only and bytes count the rest."""
    text = "crème brûlée — à la carte, naïve café. " * 4
    tok = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, vocab_size=tok.vocab_size))
    torch.save(
        {"format": FORMAT, "model": model.state_dict(), "model_arch": model.arch(), "tokenizer": tokenizer_record(tok.meta())},
        tmp_path / "char.pt",
    )
    (tmp_path / "text.txt").write_text(text, encoding="utf-8")
    r = cli_json(capsys, str(tmp_path / "char.pt"), str(tmp_path / "text.txt"), "--stride", "16")
    assert r["eot_prefix"] is False and r["tokenizer"] == "char"
    assert r["tokens"] == len(text) and r["tokens_scored"] == len(text) - 1
    assert r["bytes"] == len(text[1:].encode("utf-8"))
    # by hand, stride = block: disjoint chunks of 17 tokens, then the last 17 tokens for the targets left over
    ids = torch.tensor(tok.encode(text))
    assert (len(ids) - 1) % 16 != 0  # so that there is a left-over tail
    total, done = 0.0, 1
    with torch.no_grad():
        for a in range(0, len(ids) - 16, 16):
            chunk = ids[a:a + 17]
            logits, _ = model(chunk[None, :-1], all_logits=True)
            total += torch.nn.functional.cross_entropy(logits[0], chunk[1:], reduction="sum").item()
            done = a + 17
        last = ids[-17:]
        logits, _ = model(last[None, :-1], all_logits=True)
        left = len(ids) - done
        total += torch.nn.functional.cross_entropy(logits[0, -left:], last[-left:], reduction="sum").item()
    assert r["nll_sum"] == pytest.approx(total, rel=1e-5)


@pytest.fixture(scope="module")
def char_run(reference_run, tmp_path_factory) -> dict:
    """The session's tiny char run (a contiguous split), its spec, and the text of its val split (written
    here, not beside the shared run)."""
    corpus = (reference_run.tmp / "corpus.txt").read_text(encoding="utf-8")
    val = tmp_path_factory.mktemp("char") / "val.txt"
    val.write_text(corpus[int(len(corpus) * (1 - 0.1)):], encoding="utf-8")
    return {"dir": reference_run.dir, "spec": reference_run.spec, "val": val}


def test_dataset_split_equals_its_text(char_run, capsys):
    """Scoring a spec's prepared val split gives exactly the figures of scoring the val text as a file."""
    from_spec = cli_json(capsys, str(char_run["dir"]), str(char_run["spec"]), "--block-size", "32", "--stride", "8")
    from_text = cli_json(capsys, str(char_run["dir"]), str(char_run["val"]), "--block-size", "32", "--stride", "8")
    assert from_spec["split"] == "val" and from_text["split"] is None
    for key in ("tokens", "tokens_scored", "bytes", "windows", "nll_sum", "bits_per_byte"):
        assert from_spec[key] == from_text[key], key
    train = cli_json(capsys, str(char_run["dir"]), str(char_run["spec"]), "--split", "train", "--stride", "32", "--batch-size", "32")
    assert train["tokens"] > 8 * from_spec["tokens"]


def test_plain_report(char_run, capsys):
    """Without --json the report is labelled lines on stdout; the progress line goes to stderr."""
    capsys.readouterr()
    assert main(["perplexity", str(char_run["dir"]), str(char_run["val"]), "--device", "cpu"]) == 0
    out = capsys.readouterr()
    labels = [line.split(":")[0] for line in out.out.splitlines()]
    assert labels == ["model", "text", "tokenizer", "windows", "tokens scored", "nll", "perplexity", "bits per byte"]
    assert "scoring" in out.err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--stride", "40", "--block-size", "20"], "--stride 40 must not exceed --block-size 20"),
        (["--stride", "0"], "--stride must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--block-size", "65"], "--block-size 65 exceeds the model's block size (64)"),
        (["--stride", "50", "--block-size", "32"], "--stride 50 must not exceed"),
    ],
)
def test_bad_flags_exit_2(hf_dir, capsys, tmp_path, flags, message):
    """Out-of-range window flags exit 2 with a message naming the flag."""
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    capsys.readouterr()
    assert main(["perplexity", str(hf_dir), str(tmp_path / "t.txt"), *flags]) == 2
    out = capsys.readouterr()
    assert message in out.err and out.out == ""


def test_bad_inputs_exit_2(hf_dir, char_run, capsys, tmp_path):
    """A missing text, an empty one, or a dataset of another tokenizer exits 2 with a clear message."""
    cases = [
        ([str(hf_dir), str(tmp_path / "missing.txt")], "does not exist"),
        ([str(char_run["dir"]), str(tmp_path / "empty.txt")], "nothing to score"),
        ([str(hf_dir), str(char_run["spec"])], "was tokenized with"),
    ]
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    for args, message in cases:
        capsys.readouterr()
        assert main(["perplexity", *args]) == 2, args
        assert message in capsys.readouterr().err
