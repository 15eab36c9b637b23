"""Rotary position embeddings (RoPE), as transformers computes them: the Llama model's positions,
and the GPT model's with `position = "rope"` (both import them from here, so there is one RoPE)."""

from __future__ import annotations

from typing import Any

import torch


def rope_tables(config: Any, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every (position, frequency) pair, (block_size, head_size), in float32.

    Frequencies as transformers computes them (theta^(-2i/hs)), each repeated for both halves of
    the head: the "rotate half" layout Hugging Face weights are stored in.
    """
    hs = config.head_size
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, hs, 2, dtype=torch.int64, device=device).float() / hs))
    t = torch.arange(config.block_size, dtype=torch.int64, device=device).float()
    freqs = torch.outer(t, inv_freq)  # (block_size, hs/2)
    emb = torch.cat((freqs, freqs), dim=-1)  # (block_size, hs)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each (B, nh, T, hs) head's pairs (i, i + hs/2) by its position's angles (cos, sin: (T, hs))."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)
