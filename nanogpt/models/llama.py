"""
A Llama-style language model, in the manner of model.py: pre-RMSNorm blocks, rotary positions
(RoPE), a SwiGLU MLP, grouped-query attention and no biases, with the parameter names of
transformers' LlamaForCausalLM, so SmolLM, TinyLlama, Llama and their kin map onto it one to one.
References:
1) Meta's reference implementation: https://github.com/meta-llama/llama/blob/main/llama/model.py
2) huggingface/transformers PyTorch implementation:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py

It shares GPT's attention call (SDPA: flash kernels on GPU, no T x T mask) and KV cache, samples
through nanogpt.models.generation, and counts parameters and FLOPs by the same conventions
(nanogpt/config/sizes.py). Hugging Face Llama weights are imported in nanogpt/models/weights.py, which also
holds this kind's builder; a checkpoint is rebuilt from `arch()` like any registered kind's.
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
from nanogpt.models import gpt
from nanogpt.models.rope import apply_rope, rope_tables
from nanogpt.config import sizes
from nanogpt.config.sizes import LlamaConfig


class KVCache(gpt.KVCache):
    """GPT's cache, holding only the n_kv_head key/value heads: the memory grouped-query attention saves."""

    def __init__(self, config: LlamaConfig, batch_size: int):
        super().__init__(config, batch_size)
        self.shape = (batch_size, config.n_kv_head, config.block_size, config.head_size)


class Attention(nn.Module):

    # see CausalSelfAttention: bf16 attention of short sequences on a CPU runs faster in float32
    cpu_bf16_in_fp32_up_to = gpt.CausalSelfAttention.cpu_bf16_in_fp32_up_to

    def __init__(self, config: LlamaConfig):
        super().__init__()
        hs = config.head_size
        self.q_proj = nn.Linear(config.n_embd, config.n_head * hs, bias=False)
        self.k_proj = nn.Linear(config.n_embd, config.n_kv_head * hs, bias=False)
        self.v_proj = nn.Linear(config.n_embd, config.n_kv_head * hs, bias=False)
        self.o_proj = nn.Linear(config.n_head * hs, config.n_embd, bias=False)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.n_head, self.n_kv_head, self.head_size = config.n_head, config.n_kv_head, hs
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: Optional[KVCache] = None, layer: int = 0
    ) -> torch.Tensor:
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = self.k_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_size).transpose(1, 2)  # (B, nkv, T, hs)
        # positions enter here, by rotating queries and keys; the cache keeps keys already rotated
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

        past = None
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(layer, k, v)  # (B, nkv, past + T, hs)
        if self.n_kv_head != self.n_head:
            # each key/value head serves a group of n_head / n_kv_head query heads
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)  # (B, nh, T', hs)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

        y = gpt.causal_attention(
            q, k, v, past=past, dropout_p=self.dropout if self.training else 0.0,
            cpu_bf16_in_fp32_up_to=self.cpu_bf16_in_fp32_up_to,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble all head outputs side by side
        return self.resid_dropout(self.o_proj(y))


class MLP(nn.Module):

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.n_embd, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.n_embd, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # SwiGLU: a SiLU-gated linear unit, (B, T, intermediate_size), then back to n_embd
        return self.dropout(self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x)))


class Block(nn.Module):

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.input_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.self_attn = Attention(config)
        self.post_attention_layernorm = nn.RMSNorm(config.n_embd, eps=config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                kv_cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, kv_cache, layer)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Llama(nn.Module):

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.config = config
        self.model = nn.ModuleDict(dict(
            embed_tokens=nn.Embedding(config.vocab_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            layers=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            norm=nn.RMSNorm(config.n_embd, eps=config.norm_eps),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.checkpoint_blocks = False  # system.activation_checkpointing = "blocks" sets it
        # RoPE's angles: computed, not learned, so they are never saved (they follow block_size and rope_theta)
        self.register_buffer("rope_cos", None, persistent=False)
        self.register_buffer("rope_sin", None, persistent=False)
        self.tie_weights_and_buffers()
        self._init_weights()

    def tie_weights_and_buffers(self) -> None:
        """Tie the head to the token table and compute RoPE's tables: at construction, and again
        after `to_empty` gives every module a tensor of its own."""
        self._reset_rope()
        if self.config.tie_embeddings:
            self.model.embed_tokens.weight = self.lm_head.weight  # one matrix reads tokens in and writes them out

    def _reset_rope(self) -> None:
        self.rope_cos, self.rope_sin = rope_tables(self.config, device=self.lm_head.weight.device)

    def _init_weights(self) -> None:
        # GPT-2's init (see GPT._init_gpt2): N(0, 0.02), the projections that write into the
        # residual stream scaled by 1/sqrt(2 * n_layer); RMSNorm weights start at one
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, module in self.named_modules():
            if isinstance(module, nn.Linear):
                residual = name.endswith((".o_proj", ".down_proj"))
                nn.init.normal_(module.weight, mean=0.0, std=residual_std if residual else 0.02)
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
        """Logits (B, T, vocab_size) and the mean cross-entropy over targets != -1, as GPT.forward:
        without targets (and without `all_logits`) only the last position's, (B, 1, vocab_size)."""
        _, t = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + t > self.config.block_size:
            raise ValueError(
                f"cannot forward a sequence of length {start + t}, the block size is only {self.config.block_size}"
            )
        cos, sin = self.rope_cos[start:start + t], self.rope_sin[start:start + t]  # (t, hs)

        x = self.model.drop(self.model.embed_tokens(idx))  # token embeddings of shape (b, t, n_embd)
        for layer, block in enumerate(self.model.layers):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                # keep only the block's input; the backward runs the block again to get the rest
                x = checkpoint(block, x, cos, sin, use_reentrant=False)
            else:
                x = block(x, cos, sin, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.advance(t)

        if not (targets is not None or all_logits):
            x = x[:, [-1], :]  # inference: only the last position's logits are needed
        logits = self.lm_head(self.model.norm(x))  # (b, t, vocab_size)
        loss = None
        if targets is not None:
            # in float32 whatever the logits' precision (autocast does the same for cross_entropy)
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @property
    def blocks(self) -> nn.ModuleList:
        """The repeated transformer blocks: fsdp shards (and compile compiles) each one on its own."""
        return self.model.layers

    def param_roles(self) -> dict[str, str]:
        """Each parameter's part (nanogpt.contracts.ROLES): the blocks' matrices hidden, the token and position tables
        table embedding, an untied lm_head the head, norms' gains and biases other."""
        return gpt.roles_by_structure(self, blocks=self.blocks, head=self.lm_head)

    # -------------------------------------------------------------------- sizes and FLOPs

    @property
    def context_length(self) -> int:
        return self.config.block_size

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def arch(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this model: the model table's shape fields, `kind`, `vocab_size`."""
        c = self.config
        return dict(
            kind="llama",
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_kv_head=c.n_kv_head,
            n_embd=c.n_embd,
            intermediate_size=c.intermediate_size,
            block_size=c.block_size,
            vocab_size=c.vocab_size,
            rope_theta=c.rope_theta,
            norm_eps=c.norm_eps,
            tie_embeddings=c.tie_embeddings,
        )

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, each shared tensor once, by GPT's convention (see GPT.num_params).

        non_embedding=True (the N of MFU): everything but the token table when it is not tied to
        the head (there is no position table). non_embedding=False: every parameter.
        """
        c = self.config
        n = sizes.llama_params(**attrs.asdict(c))
        if non_embedding or c.tie_embeddings:
            return n
        return n + c.vocab_size * c.n_embd

    def flops_per_token(self) -> int:
        """Training FLOPs per token, 6N + 12·L·H·Q·T, as GPT's (sizes.mfu_flops_per_token): the
        attention term counts the query heads, which grouped-query attention does not reduce."""
        c = self.config
        return sizes.mfu_flops_per_token(
            n_params=self.num_params(), n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size
        )

    def crop_block_size(self, block_size: int) -> None:
        """A shorter context; RoPE has no table of weights to cut, only its angles to recompute."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size} (got {block_size})")
        self.config = attrs.evolve(self.config, block_size=block_size)
        self._reset_rope()

    # ------------------------------------------------------------------------- generation

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for `batch_size` sequences: what nanogpt.models.generation feeds back through `forward`.

        Keys are cached already rotated, so once the window slides (every position shifts)
        generation drops the cache and recomputes the cropped window."""
        return KVCache(self.config, batch_size)

    def generate_stream(self, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> Iterator[torch.Tensor]:
        """The next token of every row, (B,), step by step; see `nanogpt.models.generation.generate_stream`."""
        return generation.generate_stream(self, idx, max_new_tokens, **sampling)

    def generate(self, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> torch.Tensor:
        """`idx` (B, T) continued by up to `max_new_tokens` tokens; see `nanogpt.models.generation.generate`."""
        return generation.generate(self, idx, max_new_tokens, **sampling)

