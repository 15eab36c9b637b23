"""Generation for any `LanguageModel`: sampling one token from logits, and streams of new tokens.

A model that offers `new_kv_cache(batch_size)` is fed one new position per token while the
sequence fits its context (its keys and values are kept); any other model, and any model once
the window has to slide, gets the whole cropped window each step, exactly as nanoGPT's `generate`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, Optional

import torch
from torch.nn import functional as F

from nanogpt.errors import InputError


def sample_next(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    generator: Optional[torch.Generator] = None,
) -> torch.Tensor:
    """One token id per row, (B,), drawn from (B, V) logits."""
    logits = logits.float()
    if temperature == 0:
        return logits.argmax(dim=-1)
    # scale by desired temperature
    logits = logits / temperature
    # optionally crop the logits to only the top k options
    if top_k:
        v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
        logits = logits.masked_fill(logits < v[:, [-1]], -float("inf"))
    # apply softmax to convert logits to (normalized) probabilities
    probs = F.softmax(logits, dim=-1)
    if top_p is not None and top_p < 1.0:
        # nucleus: keep the likeliest tokens until their mass reaches top_p (the first one always stays)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    # sample from the distribution (multinomial renormalises)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def _check_sampling(max_new_tokens: int, temperature: float, top_k: Optional[int], top_p: Optional[float]) -> None:
    if max_new_tokens < 0:
        raise InputError(f"max_new_tokens must be at least 0 (got {max_new_tokens})")
    if not (temperature >= 0 and math.isfinite(temperature)):
        raise InputError(f"temperature must be 0 (greedy) or above (got {temperature!r})")
    if top_k is not None and top_k < 0:
        raise InputError(f"top_k must be at least 1, or 0/None to disable it (got {top_k})")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InputError(f"top_p must be in (0, 1] (got {top_p!r})")


@torch.no_grad()
def generate_stream(
    model: Any,
    idx: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eot_id: Optional[int] = None,
    generator: Optional[torch.Generator] = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,), one step at a time, continuing `idx` (B, T).

    temperature 0 is greedy; top_k keeps the k likeliest tokens, top_p the smallest set whose
    probability reaches p (both off when None). With `eot_id`, a row ends when it produces it
    and yields `eot_id` from then on; the stream stops once every row has ended. The same
    `generator` seed gives the same tokens (it must live on the model's device, e.g.
    `torch.Generator(device="cuda")`). The model is in eval mode while the stream runs.

    With `use_cache` (and a model that has `new_kv_cache`) the keys and values of past positions
    are kept, so a step costs one position instead of the whole context. Once the sequence
    outgrows the context, the window slides and every token changes position, which invalidates
    the cache; from there each step recomputes the cropped window, exactly as the cache-free path
    (the seed's) does.
    """
    _check_sampling(max_new_tokens, temperature, top_k, top_p)
    if idx.dim() != 2 or idx.size(1) < 1:
        raise InputError(f"generation needs a (batch, time) tensor of at least one token (got shape {tuple(idx.shape)})")
    use_cache = use_cache and hasattr(model, "new_kv_cache")
    was_training = model.training
    model.eval()
    try:
        context = model.context_length
        seq = idx
        cache = None
        ended = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for _ in range(max_new_tokens):
            if use_cache and seq.size(1) <= context:
                if cache is None:
                    cache = model.new_kv_cache(seq.size(0))
                    logits, _ = model(seq, kv_cache=cache)  # prefill the prompt
                else:
                    logits, _ = model(seq[:, -1:], kv_cache=cache)  # only the newest token
            else:
                cache = None  # the window slides: positions shift and cached keys go stale
                # if the sequence context is growing too long we must crop it at the context length
                logits, _ = model(seq if seq.size(1) <= context else seq[:, -context:])
            idx_next = sample_next(logits[:, -1, :], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
            if eot_id is not None:
                idx_next = torch.where(ended, torch.full_like(idx_next, eot_id), idx_next)
                ended |= idx_next == eot_id
            seq = torch.cat((seq, idx_next[:, None]), dim=1)
            yield idx_next
            if eot_id is not None and bool(ended.all()):
                return
    finally:
        model.train(was_training)


@torch.no_grad()
def generate(model: Any, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> torch.Tensor:
    """`idx` (B, T) continued by up to `max_new_tokens` tokens, (B, T + n); see `generate_stream`.

    Rows that ended at `eot_id` are padded with it; once every row has ended, n < max_new_tokens.
    """
    steps = list(generate_stream(model, idx, max_new_tokens, **sampling))
    if not steps:
        return idx
    return torch.cat((idx, torch.stack(steps, dim=1)), dim=1)


def start_ids(tokenizer: Any, start: str | None) -> list[int]:
    """The prompt's ids; with no prompt, end-of-text (BPE, document corpora) or a newline (a char stream).

    "<|endoftext|>" in a prompt is the end-of-text token itself.
    """
    if start:
        ids = tokenizer.encode(start, allowed_special=True)
        if ids:
            return ids
    if getattr(tokenizer, "eot_id", None) is not None:
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode("\n")
    except InputError:  # a vocabulary without newlines: any token starts a sample
        return [0]


class IncrementalDecoder:
    """Decode one row's ids as they come, so that what is passed on adds up to `decode(all ids)`.

    Decoding token by token is wrong for two kinds of tokenizer: a SentencePiece-style one (the `▁`
    word marker) drops the leading space of a sequence's first piece, so each token decoded alone
    loses its space; and a BPE token can end inside a multi-byte character (its text then ends in
    U+FFFD until the next token completes it). So the ids are decoded from a window that starts one
    emitted piece back, and only what that adds past the text already decoded from the window is
    passed on; text ending in U+FFFD waits for the next token.
    """

    def __init__(self, tokenizer: Any, emit: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.emit = emit
        self.ids: list[int] = []
        self.window_start = 0  # the window's text is decoded from here: its first piece is one already emitted
        self.emitted_to = 0  # ids before this have been passed on

    def push(self, token: int) -> None:
        self.ids.append(token)
        self._flush(final=False)

    def _flush(self, *, final: bool) -> None:
        before = self.tokenizer.decode(self.ids[self.window_start:self.emitted_to])
        text = self.tokenizer.decode(self.ids[self.window_start:])
        if (final or not text.endswith("\ufffd")) and len(text) > len(before) and text.startswith(before):
            self.emit(text[len(before):])
            self.window_start, self.emitted_to = self.emitted_to, len(self.ids)

    def close(self) -> None:
        if self.emitted_to < len(self.ids):
            self._flush(final=True)
        self.ids = self.ids[self.emitted_to:]


@torch.no_grad()
def generate_texts(
    model: torch.nn.Module,
    tokenizer: Any,
    *,
    start: str | None,
    num_samples: int,
    max_new_tokens: int,
    seed: int,
    device: torch.device,
    temperature: float = 0.8,
    top_k: int | None = 200,
    top_p: float | None = None,
    stop_at_eot: bool = False,
    autocast: Any = None,
    on_text: Callable[[str], None] | None = None,
) -> list[str]:
    """`num_samples` continuations of `start`, generated as one batch; the same seed gives the same text.

    Returns the new text of each sample (not the prompt). With `stop_at_eot` a sample ends before
    its first end-of-text token. `on_text` receives the first sample's text piece by piece as its
    tokens are generated (whole characters only); the pieces add up to the first returned text.
    """
    prompt = start_ids(tokenizer, start)
    idx = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    eot = getattr(tokenizer, "eot_id", None) if stop_at_eot else None
    stream = IncrementalDecoder(tokenizer, on_text) if on_text is not None else None
    rows: list[list[int]] = [[] for _ in range(num_samples)]
    ended = [False] * num_samples
    # eagerly, even where the model's blocks are compiled (fsdp compiles them in place): the KV
    # cache's per-layer indexing would make dynamo recompile each block once per layer and, past
    # its recompile limit, leave the block eager for the rest of the process, training included
    with autocast or contextlib.nullcontext(), torch.compiler.set_stance("force_eager"):
        # generate_stream puts the model in eval mode for the stream and restores it after
        steps = generate_stream(
            model, idx, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p, eot_id=eot, generator=generator
        )
        with contextlib.closing(steps):  # an error here still closes the stream (and restores train mode)
            for step in steps:
                for row, token in enumerate(step.tolist()):
                    if ended[row]:
                        continue
                    if eot is not None and token == eot:
                        ended[row] = True
                        continue
                    rows[row].append(token)
                    if row == 0 and stream is not None:
                        stream.push(token)
    if stream is not None:
        stream.close()
    return [tokenizer.decode(row) for row in rows]
