"""Text generation: the `sample` verb and the samples a run logs at its evaluations (the same code)."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def start_ids(tokenizer: Any, start: str | None) -> list[int]:
    """The prompt's ids; with no prompt, end-of-text (BPE) or a newline (characters)."""
    if start:
        ids = tokenizer.encode(start)
        if ids:
            return ids
    if getattr(tokenizer, "eot_id", None) is not None:
        return [tokenizer.eot_id]
    return tokenizer.encode("\n")


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
) -> list[str]:
    """`num_samples` continuations of `start`, generated as one batch; the same seed gives the same text."""
    prompt = start_ids(tokenizer, start)
    idx = torch.tensor([prompt] * num_samples, dtype=torch.long, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    eot = getattr(tokenizer, "eot_id", None) if stop_at_eot else None
    was_training = model.training
    model.eval()
    try:
        with autocast or contextlib.nullcontext():
            out = model.generate(
                idx, max_new_tokens, temperature=temperature, top_k=top_k or None, top_p=top_p, eot_id=eot, generator=generator
            )
    finally:
        model.train(was_training)
    texts = []
    for row in out.tolist():
        new = row[len(prompt):]
        if eot is not None and eot in new:
            new = new[: new.index(eot)]
        texts.append(tokenizer.decode(new))
    return texts
