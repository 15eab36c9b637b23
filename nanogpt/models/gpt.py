"""
The GPT language model, all of it in this one file: GPT-2's architecture with GPT-2's parameter
names, so OpenAI's weights (and nanoGPT's checkpoints) map onto it one to one (nanogpt/models/weights.py
imports them, and builds a GPT from a spec).
References:
1) the official GPT-2 TensorFlow implementation released by OpenAI:
   https://github.com/openai/gpt-2/blob/master/src/model.py
2) huggingface/transformers PyTorch implementation:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/gpt2/modeling_gpt2.py

Differences from the seed's model.py (nanoGPT, January 2023), each one measured or asked for:
attention goes through `F.scaled_dot_product_attention` (flash kernels on GPU, a fused kernel on
CPU, no T x T mask buffer), GELU is PyTorch's fused tanh approximation, the output head can share
its matrix with the token embedding (GPT-2 does), biases are optional, the vocabulary can be padded
to a friendlier multiple, inference computes only the last position's logits, and generation keeps
a KV cache (nanogpt/models/generation.py samples from any model). Parameter and FLOP counts come from nanogpt/config/sizes.py, the one place that counts them.

The GPT-2 speedrun's (modded-nanogpt) architecture changes are options of the config, each off by
default so that GPT-2 (and every checkpoint of it) is unchanged bit for bit: rotary positions
instead of the learned table (`position`, `rope_theta`; the Llama model's RoPE, nanogpt/models/rope.py),
RMSNorm instead of LayerNorm (`norm`), queries and keys RMS-normalised per head (`qk_norm`), a ReLU²
or SwiGLU MLP (`mlp`), logits soft-capped as cap·tanh(logits/cap) (`logit_softcap`), and output
projections that start at zero (`zero_init_residual`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Optional

import attrs
import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from nanogpt.models import generation
from nanogpt.models.rope import apply_rope, rope_tables
from nanogpt.config import sizes
from nanogpt.config.tables import GPTSpec


@attrs.frozen(kw_only=True)
class GPTConfig:
    """The sizes and switches that make a GPT; everything a checkpoint needs to rebuild one."""

    n_layer: int
    n_head: int
    n_embd: int
    block_size: int
    vocab_size: int
    """Token ids the model knows: 0 .. vocab_size-1."""
    padded_vocab_size: int = attrs.field(
        default=attrs.Factory(lambda self: self.vocab_size, takes_self=True)
    )
    """Rows of the embedding and the head; the rows past vocab_size are never sampled nor scored."""
    dropout: float = 0.0
    bias: bool = True
    tie_weights: bool = True
    init: str = "gpt2"
    position: str = "learned"
    """"learned": GPT-2's position table (wpe); "rope": rotary positions on queries and keys, no table."""
    rope_theta: float = 10000.0
    norm: str = "layernorm"
    """"layernorm" (GPT-2) or "rmsnorm" (a gain, no bias, no mean subtracted)."""
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys (no gain) before attention (and before RoPE)."""
    mlp: str = "gelu"
    """"gelu" (GPT-2), "relu2" (ReLU squared) or "swiglu" (SiLU-gated, hidden width sizes.gpt_mlp_hidden)."""
    logit_softcap: Optional[float] = None
    """None, or the cap of cap * tanh(logits / cap)."""
    zero_init_residual: bool = False
    """Output projections (every c_proj) start at zero, so each block starts as the identity."""

    def __attrs_post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer (got {value!r})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"padded_vocab_size ({self.padded_vocab_size}) must be at least vocab_size ({self.vocab_size})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {self.dropout!r})")
        if self.init not in ("gpt2", "pytorch"):
            raise ValueError(f"init must be 'gpt2' or 'pytorch' (got {self.init!r})")
        for name, choices in (("position", sizes.GPT_POSITIONS), ("norm", sizes.GPT_NORMS), ("mlp", sizes.GPT_MLPS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))} (got {getattr(self, name)!r})")
        if self.position == "rope" and self.head_size % 2:
            raise ValueError(f"position = 'rope' needs an even head size n_embd / n_head (got {self.head_size}): RoPE rotates pairs")
        if not self.rope_theta > 0:
            raise ValueError(f"rope_theta must be positive (got {self.rope_theta!r})")
        if self.logit_softcap is not None and not self.logit_softcap > 0:
            raise ValueError(f"logit_softcap must be positive or None (got {self.logit_softcap!r})")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_hidden(self) -> int:
        """Hidden width of the MLP (sizes.gpt_mlp_hidden): 4 * n_embd, or Llama's rule for SwiGLU."""
        return sizes.gpt_mlp_hidden(self.n_embd, self.mlp)

    def options(self) -> dict[str, Any]:
        """The architecture options (all but GPT-2's own sizes and switches), as `arch()` records them."""
        return dict(
            position=self.position, rope_theta=self.rope_theta, norm=self.norm, qk_norm=self.qk_norm,
            mlp=self.mlp, logit_softcap=self.logit_softcap, zero_init_residual=self.zero_init_residual,
        )

    @classmethod
    def from_spec(cls, spec: GPTSpec, vocab_size: int) -> GPTConfig:
        """The config of a spec's model for a vocabulary of `vocab_size` ids (padded per spec.pad_vocab_multiple)."""
        return cls(
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_embd=spec.n_embd,
            block_size=spec.block_size,
            vocab_size=vocab_size,
            padded_vocab_size=sizes.padded_vocab(vocab_size, spec.pad_vocab_multiple),
            dropout=spec.dropout,
            bias=spec.bias,
            tie_weights=spec.tie_weights,
            init=spec.init,
            position=spec.position,
            rope_theta=spec.rope_theta,
            norm=spec.norm,
            qk_norm=spec.qk_norm,
            mlp=spec.mlp,
            logit_softcap=spec.logit_softcap,
            zero_init_residual=spec.zero_init_residual,
        )

    def sizes(self, padded: bool = True) -> dict[str, int]:
        """The sizes nanogpt.config.sizes's counters take."""
        return dict(
            n_layer=self.n_layer,
            n_head=self.n_head,
            n_embd=self.n_embd,
            block_size=self.block_size,
            vocab_size=self.padded_vocab_size if padded else self.vocab_size,
        )


class KVCache:
    """Keys and values of every layer for the tokens seen so far, so each new token costs one position.

    Preallocated to the block size on first use, in the dtype the attention produces (bf16 under
    autocast). Positions are absolute (learned position embeddings, or keys cached already rotated
    by RoPE), so a cache is only good while the sequence fits in the block; `generation.generate_stream`
    drops it once the window has to slide.
    """

    def __init__(self, config: GPTConfig, batch_size: int):
        self.n_layer = config.n_layer
        self.max_len = config.block_size
        self.shape = (batch_size, config.n_head, config.block_size, config.n_embd // config.n_head)
        self.k: list[torch.Tensor] = []
        self.v: list[torch.Tensor] = []
        self.length = 0  # positions filled, the same in every layer

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this layer's new (B, nh, T, hs) keys and values; return all of them so far."""
        if not self.k:
            self.k = [k.new_zeros(self.shape) for _ in range(self.n_layer)]
            self.v = [v.new_zeros(self.shape) for _ in range(self.n_layer)]
        end = self.length + k.size(2)
        self.k[layer][:, :, self.length:end] = k
        self.v[layer][:, :, self.length:end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    past: Optional[int] = None,
    dropout_p: float = 0.0,
    cpu_bf16_in_fp32_up_to: int = 128,
) -> torch.Tensor:
    """SDPA of (B, nh, T, hs) queries over (B, nh, past + T, hs) keys and values, each query seeing
    the positions up to its own; `past` is how many cached positions come before the queries.

    bf16 attention on a CPU is computed in float32 up to `cpu_bf16_in_fp32_up_to` positions
    (the measured crossover is 128-256)."""
    T = q.size(2)
    mask, is_causal = None, True
    if past is not None:
        if T == 1:
            is_causal = False  # one new query sees every cached position: no mask at all
        elif past > 0:
            # SDPA's is_causal aligns the mask top-left; queries here sit at positions past..past+T-1
            mask = torch.ones(T, past + T, dtype=torch.bool, device=q.device).tril(diagonal=past)
            is_causal = False
    if q.dtype == torch.bfloat16 and q.device.type == "cpu" and T <= cpu_bf16_in_fp32_up_to:
        # the CPU's bf16 flash kernel has a slow backward on short sequences (2-3.5x slower than
        # float32 at 64-128 positions, benchmarks/README.md); the casts cost far less than that
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            ).to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)


class CausalSelfAttention(nn.Module):

    # sequence lengths up to which bf16 attention on a CPU is computed in float32 (measured crossover: 128-256)
    cpu_bf16_in_fp32_up_to = 128

    def __init__(self, config: GPTConfig):
        super().__init__()
        assert config.n_embd % config.n_head == 0
        # key, query, value projections for all heads, but in a batch
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        # output projection
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        # regularization; attention-weight dropout happens inside scaled_dot_product_attention
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.qk_norm = config.qk_norm

    def forward(
        self, x: torch.Tensor, kv_cache: Optional[KVCache] = None, layer: int = 0,
        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)

        # calculate query, key, values for all heads in batch and move head forward to be the batch dim
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:
            # each head's query and key at unit RMS: attention logits stay bounded however the weights grow
            q = F.rms_norm(q, (q.size(-1),), eps=NORM_EPS)  # (B, nh, T, hs)
            k = F.rms_norm(k, (k.size(-1),), eps=NORM_EPS)
        if rope is not None:
            # positions enter here; rope's (T, hs) tables start at the cache's position, and the cache keeps keys rotated
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # (B, nh, T, hs)

        past = None
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(layer, k, v)  # (B, nh, past + T, hs)

        # causal self-attention; (B, nh, T, hs) x (B, nh, hs, T') -> (B, nh, T, T') -> (B, nh, T, hs)
        y = causal_attention(
            q, k, v, past=past, dropout_p=self.dropout if self.training else 0.0,
            cpu_bf16_in_fp32_up_to=self.cpu_bf16_in_fp32_up_to,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side

        # output projection
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_hidden
        self.kind = config.mlp
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        if self.kind == "swiglu":
            self.c_gate = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "swiglu":
            x = F.silu(self.c_gate(x)) * self.c_fc(x)  # (B, T, hidden): Llama's SwiGLU, c_fc its up_proj
        elif self.kind == "relu2":
            x = F.relu(self.c_fc(x)).square()  # (B, T, 4 * n_embd): the speedrun's ReLU squared
        else:
            x = self.c_fc(x)
            x = F.gelu(x, approximate="tanh")  # GPT-2's GELU ("gelu_new"), one fused kernel instead of five ops
        x = self.c_proj(x)
        return self.dropout(x)


NORM_EPS = 1e-5
"""Epsilon of every norm: LayerNorm's default, and the RMSNorms' (model.norm, qk_norm) too."""


def make_norm(config: GPTConfig) -> nn.Module:
    """A norm over n_embd: GPT-2's LayerNorm, or an RMSNorm (a gain, never a bias) with `norm = "rmsnorm"`."""
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=NORM_EPS)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


class Block(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = MLP(config)

    def forward(
        self, x: torch.Tensor, kv_cache: Optional[KVCache] = None, layer: int = 0,
        rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer, rope)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            **({"wpe": nn.Embedding(config.block_size, config.n_embd)} if config.position == "learned" else {}),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=make_norm(config),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # padding rows get a logit of -inf through this (non-learned) bias: out of every softmax and
        # without gradient, and no (B, T, V) copy is needed to cut them off before the loss
        self.register_buffer("vocab_mask", None, persistent=False)
        # RoPE's angles (position = "rope"): computed, not learned, so never saved
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        self.checkpoint_blocks = False  # system.activation_checkpointing = "blocks" sets it
        self.tie_weights_and_buffers()
        if config.init == "gpt2":
            self._init_gpt2()
        if config.zero_init_residual:
            zero_residual_projections(self)

    def tie_weights_and_buffers(self) -> None:
        """Tie the head to the token table and compute the buffers that are not weights: at
        construction, and again after `to_empty` gives every module a tensor of its own."""
        self._reset_vocab_mask()
        if self.config.position == "rope":  # RoPE's angles, (block_size, hs) each
            self.rope_cos, self.rope_sin = rope_tables(self.config, device=self.lm_head.weight.device)
        if self.config.tie_weights:
            # GPT-2 reads tokens in and writes them out with one matrix: fewer parameters, and
            # what the model learns about a token from either end lands in the same row
            self.transformer.wte.weight = self.lm_head.weight

    def _reset_vocab_mask(self) -> None:
        c = self.config
        if c.padded_vocab_size == c.vocab_size:
            return
        mask = torch.zeros(c.padded_vocab_size, device=self.lm_head.weight.device)
        mask[c.vocab_size:] = float("-inf")
        self.vocab_mask = mask

    def _init_gpt2(self) -> None:
        # GPT-2's init: N(0, 0.02) everywhere, zero biases, and the projections that write into the
        # residual stream scaled by 1/sqrt(2 * n_layer), so the stream's variance does not grow with depth
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if name.endswith(".c_proj") else 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        targets: Optional[torch.Tensor] = None,
        *,
        kv_cache: Optional[KVCache] = None,
        all_logits: bool = False,
    ) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Logits (B, T, vocab_size) and the mean cross-entropy over targets != -1 (None without targets).

        Without targets (and without `all_logits`) only the last position's logits are computed,
        (B, 1, vocab_size): that is all sampling needs, and the head is the biggest matmul of a
        small model. Padded vocabulary rows are cut off, so they are never scored or sampled.
        """
        _, t = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(
                f"cannot forward a sequence of length {start + t}, the block size is only {self.config.block_size}"
            )
        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        rope = None
        if self.config.position == "rope":
            rope = (self.rope_cos[start:start + t], self.rope_sin[start:start + t])  # (t, hs) each, from the cache's position
            x = self.transformer.drop(tok_emb)
        else:
            pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)  # shape (t)
            pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
            x = self.transformer.drop(tok_emb + pos_emb)
        for layer, block in enumerate(self.transformer.h):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                # keep only the block's input; the backward runs the block again to get the rest
                x = checkpoint(block, x, None, 0, rope, use_reentrant=False) if rope else checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_cache, layer, rope)
        if kv_cache is not None:
            kv_cache.advance(t)

        if not (targets is not None or all_logits):
            # inference-time mini-optimization: only forward the lm_head on the very last position
            x = x[:, [-1], :]  # note: using list [-1] to preserve the time dim
        x = self.transformer.ln_f(x)
        # under fsdp's bfloat16 weights there is no autocast to match the mask's dtype to x's
        mask = self.vocab_mask.to(x.dtype) if self.vocab_mask is not None else None
        logits = head_logits(x, self.lm_head.weight, mask, self.config.logit_softcap)  # (b, t, padded_vocab)

        loss = None
        if targets is not None:
            # in float32 whatever the logits' precision (autocast does the same for cross_entropy)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # a view: callers never see the padding
        return logits, loss

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated transformer blocks: fsdp shards (and compile compiles) each one on its own."""
        return self.transformer.h

    def param_roles(self) -> dict[str, str]:
        """Each parameter's part (nanogpt.contracts.ROLES): the blocks' matrices hidden, the token and position tables
        table embedding, an untied lm_head the head, norms' gains and biases other."""
        return roles_by_structure(self, blocks=self.blocks, head=self.lm_head)

    # -------------------------------------------------------------------- sizes and FLOPs

    @property
    def context_length(self) -> int:
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def arch(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this model (nanogpt.contracts): the `[model]` fields
        that fix its shapes, its kind and its vocabulary. A padded table of P rows is recorded as
        `pad_vocab_multiple = P`, the multiple that gives exactly P rows again (and, as ever, as
        `padded_vocab_size`, which nanoGPT's `model_args` calls vocab_size)."""
        c = self.config
        return dict(
            kind="gpt",
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_embd=c.n_embd,
            block_size=c.block_size,
            bias=c.bias,
            tie_weights=c.tie_weights,
            pad_vocab_multiple=c.padded_vocab_size if c.padded_vocab_size != c.vocab_size else 1,
            vocab_size=c.vocab_size,
            padded_vocab_size=c.padded_vocab_size,
            # the speedrun's options; a record without them (older checkpoints) rebuilds GPT-2's defaults
            **c.options(),
        )

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, each shared tensor once, counted by nanogpt.config.sizes from the config.

        non_embedding=True (nanoGPT's `get_num_params()` and the N of MFU): everything but the
        position table, and but the token table when it is not tied to the head (a tied table does
        the head's matmul, so it counts). non_embedding=False: every parameter.
        """
        c = self.config
        if non_embedding:
            return sizes.params(**c.sizes(), bias=c.bias, **c.options())
        return sizes.model_params(**c.sizes(), bias=c.bias, tie_weights=c.tie_weights, **c.options())

    def flops_per_token(self) -> int:
        """Training FLOPs per token, 6N + 12·L·H·Q·T (nanoGPT / PaLM; see sizes.mfu_flops_per_token)."""
        c = self.config
        return sizes.mfu_flops_per_token(
            n_params=self.num_params(), n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size
        )

    def crop_block_size(self, block_size: int) -> None:
        """Model surgery: keep the first `block_size` positions (e.g. GPT-2's 1024 -> 256 for a small job)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size} (got {block_size})")
        if block_size == self.config.block_size:
            return
        if self.config.position == "learned":
            wpe = self.transformer.wpe
            wpe.weight = nn.Parameter(wpe.weight.detach()[:block_size].clone())
            wpe.num_embeddings = block_size
        self.config = attrs.evolve(self.config, block_size=block_size)
        self.tie_weights_and_buffers()  # rope has no table of weights to cut, only its angles to recompute


    # ------------------------------------------------------------------------- generation

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for `batch_size` sequences: what nanogpt.models.generation feeds back through `forward`."""
        return KVCache(self.config, batch_size)

    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> Iterator[torch.Tensor]:
        """The next token of every row, (B,), step by step; see `nanogpt.models.generation.generate_stream`."""
        return generation.generate_stream(self, idx, max_new_tokens, **sampling)

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> torch.Tensor:
        """`idx` (B, T) continued by up to `max_new_tokens` tokens; see `nanogpt.models.generation.generate`."""
        return generation.generate(self, idx, max_new_tokens, **sampling)


def head_logits(x: torch.Tensor, weight: torch.Tensor, mask: Optional[torch.Tensor], cap: Optional[float]) -> torch.Tensor:
    """(B, T, n_embd) -> (B, T, rows) logits, the padding rows at -inf through `mask`; with `cap`,
    soft-capped to cap * tanh(logits / cap) first (tanh would turn the padding's -inf into -cap)."""
    if cap is None:
        return F.linear(x, weight, mask)
    logits = cap * torch.tanh(F.linear(x, weight) / cap)  # in (-cap, cap)
    return logits if mask is None else logits + mask


def zero_residual_projections(model: nn.Module) -> None:
    """The speedrun's zero init (`zero_init_residual`): every output projection (`.c_proj`) zero, weight
    and bias, so each block adds nothing to the residual stream at step 0."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.endswith(".c_proj"):
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def roles_by_structure(model: nn.Module, *, blocks: nn.Module, head: nn.Linear | None) -> dict[str, str]:
    """The `param_roles()` of a model built like GPT (nanogpt.contracts.ROLES): name -> role for each
    parameter (each shared tensor once, under the name `named_parameters` gives it). nn.Embedding
    weights are embeddings, `head`'s weight the head, 2-D parameters inside `blocks` hidden
    matrices, the rest other. Llama answers with it too, and so may a plugin model."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    in_blocks = {id(p) for p in blocks.parameters()}
    head_weight = id(head.weight) if head is not None else None
    roles = {}
    for name, p in model.named_parameters():
        if id(p) in embeddings:  # first: a head tied to the token table is that table
            roles[name] = "embedding"
        elif id(p) == head_weight:
            roles[name] = "head"
        elif id(p) in in_blocks and p.ndim == 2:
            roles[name] = "hidden"
        else:
            roles[name] = "other"
    return roles
