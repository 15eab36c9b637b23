"""Zero-shot perplexity: how well a model predicts text it was not trained on (`nanogpt perplexity`).

The seed's todo ("zero-shot perplexity on PTB, WikiText, ..."), as a verb:

    nanogpt perplexity MODEL TEXT_OR_SPEC [--split val] [--block-size N] [--stride N] [--batch-size N] [--json]

MODEL is anything `nanogpt sample` loads (a run dir, a checkpoint, a nanoGPT ckpt.pt, a Hugging
Face GPT-2 dir, gpt2*; see nanogpt.models.loading), with the tokenizer of its training data. TEXT_OR_SPEC
is a UTF-8 text file, tokenized whole with that tokenizer; or a spec (a `.toml` file) whose
prepared dataset's `--split` (default val) is scored as it lies on disk (`nanogpt prepare SPEC`
first). The dataset's tokenizer must be the model's.

How a text is scored:

- The sequence is the text's tokens, preceded by one end-of-text token when the tokenizer has
  one (GPT-2's BPE; char corpora of documents). The first token is then predicted from "start of
  a document", as GPT-2 met documents in training, and every token of the text is scored, as
  lm-evaluation-harness does for its rolling log-likelihoods. Without an end-of-text token (a
  char stream) the first token is context only.
- Sliding windows, since the model sees at most `block_size` tokens. The first window is the
  first block_size + 1 tokens (block_size predictions, all scored); each next window ends
  `stride` tokens further on, is as long as the first, and scores only the targets the previous
  one did not reach. Every target is scored exactly once, with at most block_size tokens of
  context and at least block_size - stride + 1 (fewer only inside the first window, where no
  more exists). stride = block_size gives disjoint chunks (fastest; contexts 1..block_size); a
  smaller stride costs block_size / stride times the forwards and gives every token more
  context. The default stride is block_size // 2. The last window ends at the end of the text;
  all windows have the same length, so batches are rectangular.
- Reported: tokens scored, the mean negative log-likelihood in nats per token, perplexity =
  exp(mean NLL), and bits per byte = total NLL / ln 2 / the UTF-8 bytes of the scored tokens
  (end-of-text tokens are 0 bytes; with the end-of-text prefix, the bytes are the whole text's).
  Bits per byte compares models with different tokenizers; perplexity does not.
- Deterministic: the windows and batches are fixed, per-token losses are summed in float64 in a
  fixed order; the same model, text, flags and device give the same numbers.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch.nn import functional as F

from nanogpt.errors import InputError
from nanogpt.fileio import read_user_text

SPEC_SUFFIX = ".toml"


@attrs.frozen
class Window:
    """One forward: tokens begin..end-1 of the sequence; targets begin+1..end-1, of which score_from.. are scored."""

    begin: int
    end: int
    score_from: int


def sliding_windows(length: int, block_size: int, stride: int) -> Iterator[Window]:
    """The windows that score targets 1..length-1 of a sequence of `length` tokens, each exactly once."""
    if block_size < 1 or not 1 <= stride <= block_size:
        raise ValueError(f"need 1 <= stride <= block_size (got stride {stride}, block_size {block_size})")
    if length < 2:
        return
    width = min(length, block_size + 1)  # block_size inputs and their block_size targets
    end = width
    yield Window(0, end, 1)
    while end < length:
        new_end = min(length, end + stride)
        yield Window(new_end - width, new_end, end)
        end = new_end


def count_windows(length: int, block_size: int, stride: int) -> int:
    if length < 2:
        return 0
    return 1 + max(0, math.ceil((length - min(length, block_size + 1)) / stride))


class TokenSequence:
    """`prefix` followed by `tokens` (a list, array or read-only memmap), sliced without copying the whole."""

    def __init__(self, tokens: Any, prefix: Sequence[int] = ()):
        self.prefix = np.asarray(prefix, dtype=np.int64)
        self.tokens = tokens
        self.length = len(self.prefix) + len(tokens)

    def __len__(self) -> int:
        return self.length

    def slice(self, a: int, b: int) -> np.ndarray:
        p = len(self.prefix)
        head = self.prefix[min(a, p):min(b, p)]
        tail = np.asarray(self.tokens[max(a - p, 0):max(b - p, 0)], dtype=np.int64)
        return np.concatenate((head, tail)) if len(head) else tail


@attrs.frozen
class Scores:
    """Sums over every scored target of a sequence."""

    tokens: int
    """Targets scored."""
    nll: float
    """Their summed negative log-likelihood, in nats."""
    windows: int
    """Forwards (windows) it took."""


@torch.no_grad()
def score_sequence(
    model: torch.nn.Module,
    seq: TokenSequence,
    *,
    block_size: int,
    stride: int,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    autocast: Any = None,
    progress: bool = False,
) -> Scores:
    """The summed NLL of targets 1..len(seq)-1 of `seq`, each scored once by the sliding windows."""
    from nanogpt.fileio import progress_bar

    if block_size > model.context_length:
        raise InputError(f"--block-size {block_size} exceeds the model's block size ({model.context_length})")
    if not 1 <= stride <= block_size:
        raise InputError(f"--stride must be in 1 .. block_size ({block_size}) (got {stride})")
    was_training = model.training
    model.eval()
    device = torch.device(device)
    # summed on the device without a sync per batch; in float64 where the device has it (not MPS)
    total = torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device)
    scored = 0
    windows = 0
    batch: list[Window] = []

    def flush() -> None:
        nonlocal scored
        x = torch.from_numpy(np.stack([seq.slice(w.begin, w.end - 1) for w in batch])).to(device)
        y = torch.from_numpy(np.stack([seq.slice(w.begin + 1, w.end) for w in batch]))
        for row, w in enumerate(batch):
            y[row, : w.score_from - w.begin - 1] = -1  # targets an earlier window scored
            scored += w.end - w.score_from
        y = y.to(device)
        with autocast or contextlib.nullcontext():
            logits, _ = model(x, all_logits=True)  # (B, T, vocab)
        # ignore_index rather than a boolean mask: selecting the kept rows would sync the device per batch
        nll = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), ignore_index=-1, reduction="none")  # (B*T,)
        total.add_(nll.to(total.dtype).sum())
        batch.clear()

    n = count_windows(len(seq), block_size, stride)
    try:
        with progress_bar(progress and n > 1, total=n, unit="window", desc="scoring") as bar:
            for window in sliding_windows(len(seq), block_size, stride):
                batch.append(window)
                windows += 1
                if len(batch) == batch_size:
                    flush()
                    bar.update(batch_size)
            if batch:
                bar.update(len(batch))
                flush()
    finally:
        model.train(was_training)
    return Scores(tokens=scored, nll=total.item(), windows=windows)


def token_byte_lengths(tokenizer: Any) -> np.ndarray:
    """UTF-8 bytes each token id stands for (0 for end-of-text), indexed by id."""
    eot = getattr(tokenizer, "eot_id", None)
    encoding = getattr(tokenizer, "encoding", None)  # tiktoken: exact bytes, also of a token that ends mid-character
    lengths = np.zeros(tokenizer.vocab_size, dtype=np.int64)
    for i in range(tokenizer.vocab_size):
        if i == eot:
            continue
        if encoding is not None:
            lengths[i] = len(encoding.decode_single_token_bytes(i))
        else:
            lengths[i] = len(tokenizer.decode([i]).encode("utf-8", "surrogatepass"))
    return lengths


def bytes_of(seq: TokenSequence, lengths: np.ndarray, start: int = 1, chunk: int = 1 << 22) -> int:
    """UTF-8 bytes of tokens start..end of `seq` (the scored targets), read a chunk at a time."""
    total = 0
    for a in range(start, len(seq), chunk):
        total += int(lengths[seq.slice(a, min(a + chunk, len(seq)))].sum())
    return total


@attrs.frozen
class Perplexity:
    """What `nanogpt perplexity` reports."""

    model: str
    text: str
    split: str | None
    tokenizer: str
    block_size: int
    stride: int
    windows: int
    tokens: int
    """Tokens of the text (without the end-of-text prefix)."""
    eot_prefix: bool
    tokens_scored: int
    bytes: int
    """UTF-8 bytes of the scored tokens."""
    nll_sum: float

    @property
    def nll(self) -> float:
        """Mean negative log-likelihood, nats per token."""
        return self.nll_sum / self.tokens_scored

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll)

    @property
    def bits_per_byte(self) -> float | None:
        return self.nll_sum / math.log(2) / self.bytes if self.bytes else None

    def to_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out.update(nll=self.nll, perplexity=self.perplexity, bits_per_byte=self.bits_per_byte)
        return out

    def lines(self) -> str:
        where = f"{self.text} ({self.split} split)" if self.split else self.text
        bpb = f"{self.bits_per_byte:.4f}" if self.bits_per_byte is not None else "n/a (no bytes)"
        return "\n".join([
            f"model:         {self.model}",
            f"text:          {where}: {self.tokens:,} tokens, {self.bytes:,} bytes scored",
            f"tokenizer:     {self.tokenizer}{' (end-of-text prefix)' if self.eot_prefix else ''}",
            f"windows:       {self.windows:,} of {self.block_size} tokens, stride {self.stride}",
            f"tokens scored: {self.tokens_scored:,}",
            f"nll:           {self.nll:.4f} nats/token",
            f"perplexity:    {self.perplexity:.4f}",
            f"bits per byte: {bpb}",
        ]) + "\n"


def evaluate_tokens(
    model: torch.nn.Module,
    tokenizer: Any,
    tokens: Any,
    *,
    block_size: int | None = None,
    stride: int | None = None,
    batch_size: int = 1,
    device: torch.device | str = "cpu",
    autocast: Any = None,
    progress: bool = False,
    model_name: str = "",
    text_name: str = "",
    split: str | None = None,
) -> Perplexity:
    """Perplexity of `model` on token ids `tokens` (see the module docstring for the method)."""
    block_size = block_size or model.context_length
    stride = stride or max(1, block_size // 2)
    eot = getattr(tokenizer, "eot_id", None)
    seq = TokenSequence(tokens, prefix=[eot] if eot is not None else [])
    if len(seq) < 2:
        raise InputError(f"{text_name or 'the text'} has {len(tokens)} token(s): nothing to score (it takes a token of context and one to predict)")
    scores = score_sequence(
        model, seq, block_size=block_size, stride=stride, batch_size=batch_size, device=device,
        autocast=autocast, progress=progress,
    )
    return Perplexity(
        model=model_name,
        text=text_name,
        split=split,
        tokenizer=tokenizer.name,
        block_size=block_size,
        stride=stride,
        windows=scores.windows,
        tokens=len(tokens),
        eot_prefix=eot is not None,
        tokens_scored=scores.tokens,
        bytes=bytes_of(seq, token_byte_lengths(tokenizer)),
        nll_sum=scores.nll,
    )


# ------------------------------------------------------------------------------------ the verb


def read_text_file(path: str) -> str:
    return read_user_text(path, "text file")


def open_spec_dataset(path: str) -> Any:
    """The prepared dataset of a spec, opened as it is (nothing is prepared or downloaded here)."""
    from nanogpt.data.files import open_dataset
    from nanogpt.config.load import load_spec
    from nanogpt.config.tables import TokensSpec

    exp, _ = load_spec(path, check_files=False)
    if not isinstance(exp.data, TokensSpec):
        raise InputError(f"{path}: data.kind {exp.data.kind!r} is not a token dataset; give a text file instead")
    return open_dataset(exp.data)


def _same_tokenizer(a: Any, b: Any) -> bool:
    from nanogpt.checkpoints.state import tokenizer_record

    return tokenizer_record(a.meta()) == tokenizer_record(b.meta())


def perplexity_command(args: Any) -> int:
    """`nanogpt perplexity MODEL TEXT_OR_SPEC [...]`: prints the report on stdout; returns the exit status."""
    from nanogpt.fileio import want_progress
    from nanogpt.models.loading import load_model
    from nanogpt.training.dist import pick_device_and_autocast
    from nanogpt.evaluation.sample import say

    for flag in ("block_size", "stride", "batch_size"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise InputError(f"--{flag.replace('_', '-')} must be at least 1 (got {value})")
    if args.block_size is not None and args.stride is not None and args.stride > args.block_size:
        raise InputError(f"--stride {args.stride} must not exceed --block-size {args.block_size}")
    device, autocast = pick_device_and_autocast(args.device, args.dtype)

    dataset = text = None
    if args.text.endswith(SPEC_SUFFIX):
        dataset = open_spec_dataset(args.text)
    else:
        text = read_text_file(args.text)
    loaded = load_model(args.model, which=args.checkpoint, tokenizer_meta=args.tokenizer_meta)
    model, tokenizer = loaded.model.to(device), loaded.tokenizer
    if dataset is not None:
        if not _same_tokenizer(dataset.tokenizer, tokenizer):
            raise InputError(
                f"the dataset of {args.text} ({dataset.dir}) was tokenized with {dataset.tokenizer!r}, "
                f"but {loaded.description} reads {tokenizer!r}"
            )
        tokens = dataset.split(args.split)
    else:
        tokens = tokenizer.encode_array(text) if hasattr(tokenizer, "encode_array") else tokenizer.encode(text)
    say(f"scoring {len(tokens):,} tokens of {args.text} with {loaded.description} on {device}")
    result = evaluate_tokens(
        model, tokenizer, tokens, block_size=args.block_size, stride=args.stride, batch_size=args.batch_size,
        device=device, autocast=autocast, progress=want_progress(None), model_name=loaded.description,
        text_name=args.text, split=args.split if dataset is not None else None,
    )
    if args.json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(result.lines())
    return 0
