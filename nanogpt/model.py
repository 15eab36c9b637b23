"""
The GPT language model, all of it in this one file: GPT-2's architecture with GPT-2's parameter
names, so OpenAI's weights (and nanoGPT's checkpoints) map onto it one to one.
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
a KV cache. Parameter and FLOP counts come from nanogpt/scaling.py, the one place that counts them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from nanogpt import scaling
from nanogpt.errors import InputError
from nanogpt.spec.tables import GPT2_NAMES, GPTSpec


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

    @classmethod
    def from_spec(cls, spec: GPTSpec, vocab_size: int) -> GPTConfig:
        """The config of a spec's model for a vocabulary of `vocab_size` ids (padded per spec.pad_vocab_multiple)."""
        return cls(
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_embd=spec.n_embd,
            block_size=spec.block_size,
            vocab_size=vocab_size,
            padded_vocab_size=scaling.padded_vocab(vocab_size, spec.pad_vocab_multiple),
            dropout=spec.dropout,
            bias=spec.bias,
            tie_weights=spec.tie_weights,
            init=spec.init,
        )

    def sizes(self, padded: bool = True) -> dict[str, int]:
        """The sizes nanogpt.scaling's counters take."""
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
    autocast). Positions are absolute (learned position embeddings), so a cache is only good while
    the sequence fits in the block; `GPT.generate_stream` drops it once the window has to slide.
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

    def forward(self, x: torch.Tensor, kv_cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.size()  # batch size, sequence length, embedding dimensionality (n_embd)

        # calculate query, key, values for all heads in batch and move head forward to be the batch dim
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)

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
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)
        x = F.gelu(x, approximate="tanh")  # GPT-2's GELU ("gelu_new"), one fused kernel instead of five ops
        x = self.c_proj(x)
        return self.dropout(x)


class Block(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, kv_cache: Optional[KVCache] = None, layer: int = 0) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config

        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
            wpe=nn.Embedding(config.block_size, config.n_embd),
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        # padding rows get a logit of -inf through this (non-learned) bias: out of every softmax and
        # without gradient, and no (B, T, V) copy is needed to cut them off before the loss
        self.register_buffer("vocab_mask", None, persistent=False)
        self.checkpoint_blocks = False  # system.activation_checkpointing = "blocks" sets it
        self._reset_vocab_mask()
        if config.tie_weights:
            # GPT-2 reads tokens in and writes them out with one matrix: fewer parameters, and
            # what the model learns about a token from either end lands in the same row
            self.transformer.wte.weight = self.lm_head.weight
        if config.init == "gpt2":
            self._init_gpt2()

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
        pos = torch.arange(start, start + t, dtype=torch.long, device=idx.device)  # shape (t)

        # forward the GPT model itself
        tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
        pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
        x = self.transformer.drop(tok_emb + pos_emb)
        for layer, block in enumerate(self.transformer.h):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                # keep only the block's input; the backward runs the block again to get the rest
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x, kv_cache, layer)
        if kv_cache is not None:
            kv_cache.advance(t)

        if not (targets is not None or all_logits):
            # inference-time mini-optimization: only forward the lm_head on the very last position
            x = x[:, [-1], :]  # note: using list [-1] to preserve the time dim
        logits = F.linear(self.transformer.ln_f(x), self.lm_head.weight, self.vocab_mask)  # (b, t, padded_vocab)

        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # a view: callers never see the padding
        return logits, loss

    # -------------------------------------------------------------------- sizes and FLOPs

    def arch(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild this model (the runner stores it as "model_arch")."""
        c = self.config
        return dict(
            n_layer=c.n_layer,
            n_head=c.n_head,
            n_embd=c.n_embd,
            block_size=c.block_size,
            vocab_size=c.vocab_size,
            bias=c.bias,
            tie_weights=c.tie_weights,
            padded_vocab_size=c.padded_vocab_size,
        )

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameters, each shared tensor once, counted by nanogpt.scaling from the config.

        non_embedding=True (nanoGPT's `get_num_params()` and the N of MFU): everything but the
        position table, and but the token table when it is not tied to the head (a tied table does
        the head's matmul, so it counts). non_embedding=False: every parameter.
        """
        c = self.config
        if non_embedding:
            return scaling.params(**c.sizes(), bias=c.bias)
        return scaling.model_params(**c.sizes(), bias=c.bias, tie_weights=c.tie_weights)

    def flops_per_token(self) -> int:
        """Training FLOPs per token, 6N + 12·L·H·Q·T (nanoGPT / PaLM; see scaling.mfu_flops_per_token)."""
        c = self.config
        return scaling.mfu_flops_per_token(
            n_params=self.num_params(), n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size
        )

    def estimate_mfu(self, tokens_per_sec: float, peak_flops: float) -> float:
        """Model FLOPs utilisation at `tokens_per_sec` training tokens per second against `peak_flops` FLOP/s."""
        return scaling.mfu(self.flops_per_token(), tokens_per_sec, peak_flops)

    def crop_block_size(self, block_size: int) -> None:
        """Model surgery: keep the first `block_size` positions (e.g. GPT-2's 1024 -> 256 for a small job)."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size} (got {block_size})")
        if block_size == self.config.block_size:
            return
        wpe = self.transformer.wpe
        wpe.weight = nn.Parameter(wpe.weight.detach()[:block_size].clone())
        wpe.num_embeddings = block_size
        self.config = attrs.evolve(self.config, block_size=block_size)

    # ------------------------------------------------------------------------- generation

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for `generate_stream` (a model with other key/value shapes gives its own)."""
        return KVCache(self.config, batch_size)

    @torch.no_grad()
    def generate_stream(
        self,
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

        With `use_cache` the keys and values of past positions are kept (KVCache), so a step costs
        one position instead of the whole context. Once the sequence outgrows the block, the
        window slides and every token changes position, which invalidates the cache; from there
        each step recomputes the cropped window, exactly as the cache-free path (the seed's) does.
        """
        _check_sampling(max_new_tokens, temperature, top_k, top_p)
        if idx.dim() != 2 or idx.size(1) < 1:
            raise InputError(f"generation needs a (batch, time) tensor of at least one token (got shape {tuple(idx.shape)})")
        was_training = self.training
        self.eval()
        try:
            block_size = self.config.block_size
            seq = idx
            cache: Optional[KVCache] = None
            ended = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
            for _ in range(max_new_tokens):
                if use_cache and seq.size(1) <= block_size:
                    if cache is None:
                        cache = self.new_kv_cache(seq.size(0))
                        logits, _ = self(seq, kv_cache=cache)  # prefill the prompt
                    else:
                        logits, _ = self(seq[:, -1:], kv_cache=cache)  # only the newest token
                else:
                    cache = None  # the window slides: positions shift and cached keys go stale
                    # if the sequence context is growing too long we must crop it at block_size
                    logits, _ = self(seq if seq.size(1) <= block_size else seq[:, -block_size:])
                idx_next = sample_next(logits[:, -1, :], temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
                if eot_id is not None:
                    idx_next = torch.where(ended, torch.full_like(idx_next, eot_id), idx_next)
                    ended |= idx_next == eot_id
                seq = torch.cat((seq, idx_next[:, None]), dim=1)
                yield idx_next
                if eot_id is not None and bool(ended.all()):
                    return
        finally:
            self.train(was_training)

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        eot_id: Optional[int] = None,
        generator: Optional[torch.Generator] = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """`idx` (B, T) continued by up to `max_new_tokens` tokens, (B, T + n); see `generate_stream`.

        Rows that ended at `eot_id` are padded with it; once every row has ended, n < max_new_tokens.
        """
        steps = list(self.generate_stream(
            idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, eot_id=eot_id,
            generator=generator, use_cache=use_cache,
        ))
        if not steps:
            return idx
        return torch.cat((idx, torch.stack(steps, dim=1)), dim=1)

    # ------------------------------------------------------------------ pretrained weights

    @classmethod
    def from_hf(
        cls,
        name_or_dir: str,
        *,
        dropout: float = 0.0,
        block_size: Optional[int] = None,
        pad_vocab_multiple: int = 1,
    ) -> GPT:
        """OpenAI's GPT-2 by name ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"; from the Hugging Face
        hub, or its local cache) or a local Hugging Face GPT-2 model directory (never the network)."""
        local = Path(name_or_dir).is_dir()
        if not local and name_or_dir not in GPT2_NAMES:
            raise InputError(
                f"{name_or_dir!r} is neither a Hugging Face model directory nor one of {', '.join(GPT2_NAMES)}"
            )
        try:
            import transformers
            from transformers import GPT2LMHeadModel
        except ImportError as e:  # pragma: no cover - transformers is a dependency
            raise InputError(f"loading {name_or_dir!r} needs the transformers package ({e})") from None
        if not local:
            _check_hub_within_reach(name_or_dir)
        # float32 whatever the files hold: training casts through autocast, not through the weights
        dtype_arg = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
        try:
            model_hf = GPT2LMHeadModel.from_pretrained(
                name_or_dir, local_files_only=local, **{dtype_arg: torch.float32}
            )
        except (OSError, ValueError) as e:
            where = "the directory" if local else "the Hugging Face hub (is the network reachable?)"
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"cannot load GPT-2 weights {name_or_dir!r} from {where}: {first}") from None
        hf = model_hf.config
        _check_hf_config(hf, name_or_dir)
        tie = bool(getattr(hf, "tie_word_embeddings", True))
        config = GPTConfig(
            n_layer=hf.n_layer,
            n_head=hf.n_head,
            n_embd=hf.n_embd,
            block_size=hf.n_positions,
            vocab_size=hf.vocab_size,
            padded_vocab_size=scaling.padded_vocab(hf.vocab_size, pad_vocab_multiple),
            dropout=dropout,
            bias=True,
            tie_weights=tie,
        )
        # basically the openai checkpoints use a "Conv1D" module, but we only want to use a vanilla Linear
        # this means that we have to transpose these weights when we import them
        transposed = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
        sd = {}
        for key, tensor in model_hf.state_dict().items():
            if _MASK_BUFFER.search(key):
                continue  # the causal masks old transformers versions saved; SDPA needs none
            sd[key] = tensor.t() if key.endswith(transposed) else tensor
        if tie:
            sd["lm_head.weight"] = sd["transformer.wte.weight"]
        del model_hf
        model = cls._from_state_dict(config, sd, name_or_dir)
        if block_size is not None:
            _crop_to(model, block_size, name_or_dir)
        return model

    @classmethod
    def from_checkpoint(
        cls,
        path: str,
        *,
        dropout: float = 0.0,
        block_size: Optional[int] = None,
        pad_vocab_multiple: int = 1,
        vocab_size: Optional[int] = None,
        which: str = "best",
    ) -> GPT:
        """This product's checkpoint file or run directory (`which` checkpoint: "best" or "latest"), or a
        nanoGPT `ckpt.pt` ({"model_args", "model"}). Loaded with weights_only; an unsafe pickle is refused.

        nanoGPT records no unpadded vocabulary; `vocab_size` (the tokenizer's) says how many of its
        rows are real when it trained with a padded table (50304 for GPT-2's 50257).
        """
        from nanogpt.checkpoint import checkpoint_for, load_checkpoint

        p = Path(path)
        if p.is_dir():
            p = checkpoint_for(p, which)
        return cls.from_checkpoint_state(
            load_checkpoint(p), p, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple,
            vocab_size=vocab_size,
        )

    @classmethod
    def from_checkpoint_state(
        cls,
        state: dict[str, Any],
        p: Path,
        *,
        dropout: float = 0.0,
        block_size: Optional[int] = None,
        pad_vocab_multiple: int = 1,
        vocab_size: Optional[int] = None,
    ) -> GPT:
        """`from_checkpoint` of a checkpoint already loaded (safely) from `p`."""
        from nanogpt.checkpoint import FORMAT

        if state.get("format") == FORMAT:
            config, sd = _ours(state, p, dropout)
        elif isinstance(state.get("model_args"), dict) and isinstance(state.get("model"), dict):
            config, sd = _nanogpt(state, p, dropout, vocab_size, pad_vocab_multiple)
        else:
            raise InputError(
                f"{str(p)!r} is neither a nanogpt checkpoint (format {FORMAT!r}) nor a nanoGPT ckpt.pt "
                f"(keys model_args and model); it has keys {sorted(map(str, state))[:8]}"
            )
        model = cls._from_state_dict(config, sd, str(p))
        if block_size is not None:
            _crop_to(model, block_size, str(p))
        return model

    @classmethod
    def _from_state_dict(cls, config: GPTConfig, sd: dict[str, torch.Tensor], source: str) -> GPT:
        """A model with exactly the tensors of `sd`; a missing, extra or misshapen tensor is an InputError."""
        with torch.device("meta"):  # no time spent initialising weights that are overwritten next
            model = cls(config)
        model = model.to_empty(device="cpu")
        if config.tie_weights:  # to_empty gives each module its own new tensor: tie them again
            model.transformer.wte.weight = model.lm_head.weight
        model._reset_vocab_mask()
        sd = dict(sd)
        for key in ("transformer.wte.weight", "lm_head.weight"):
            table = sd.get(key)
            if table is not None and table.dim() == 2 and table.size(0) < config.padded_vocab_size:
                # the padding rows: zero, and out of reach (no token id points at them, no logit is read)
                pad = table.new_zeros(config.padded_vocab_size - table.size(0), table.size(1))
                sd[key] = torch.cat((table, pad))
        from nanogpt.checkpoint import state_mismatch

        problem = state_mismatch(model.state_dict(), sd)
        if problem is not None:
            raise InputError(f"{source!r} does not hold this architecture's weights: {problem}")
        model.load_state_dict(sd, strict=True)
        return model


# --------------------------------------------------------------------------------- sampling


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


# ------------------------------------------------------------------------- loading weights

_MASK_BUFFER = re.compile(r"(^|\.)h\.\d+\.attn\.(bias|masked_bias)$")
"""The causal-mask buffers of the seed's attention and of old transformers (not weights)."""
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
"""What torch.compile and DDP put in front of parameter names."""


def _strip_prefixes(sd: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in sd.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def _ours(state: dict[str, Any], path: Path, dropout: float) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    arch = state.get("model_arch")
    sd = state.get("model")
    if not isinstance(arch, dict) or not isinstance(sd, dict):
        raise InputError(f"checkpoint {str(path)!r} lacks model_arch or model")
    if arch.get("kind", "gpt") != "gpt":
        raise InputError(f"checkpoint {str(path)!r} holds a {arch['kind']!r} model, not a GPT")
    try:
        config = GPTConfig(
            n_layer=arch["n_layer"],
            n_head=arch["n_head"],
            n_embd=arch["n_embd"],
            block_size=arch["block_size"],
            vocab_size=arch["vocab_size"],
            padded_vocab_size=arch.get("padded_vocab_size", arch["vocab_size"]),
            dropout=dropout,
            bias=arch.get("bias", True),
            tie_weights=arch.get("tie_weights", True),
        )
    except KeyError as e:
        raise InputError(f"checkpoint {str(path)!r}: model_arch lacks {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"checkpoint {str(path)!r}: bad model_arch: {e}") from None
    return config, _strip_prefixes(sd)


def _nanogpt(
    state: dict[str, Any], path: Path, dropout: float, vocab_size: Optional[int], pad_vocab_multiple: int
) -> tuple[GPTConfig, dict[str, torch.Tensor]]:
    """nanoGPT's ckpt.pt: model_args + a state dict, maybe `_orig_mod.`-prefixed (compiled), maybe untied (Jan 2023)."""
    args = state["model_args"]
    sd = {k: v for k, v in _strip_prefixes(state["model"]).items() if not _MASK_BUFFER.search(k)}
    wte, head = sd.get("transformer.wte.weight"), sd.get("lm_head.weight")
    if not isinstance(wte, torch.Tensor) or wte.dim() != 2:
        raise InputError(f"nanoGPT checkpoint {str(path)!r} has no transformer.wte.weight matrix")
    if head is None:
        sd["lm_head.weight"] = head = wte
    # tied models saved the one matrix under both names; the January 2023 model had two
    tied = head is wte or (head.shape == wte.shape and torch.equal(head, wte))
    try:
        rows = args["vocab_size"]
        real = rows
        if vocab_size is not None and vocab_size < rows and scaling.padded_vocab(vocab_size, 64) == rows:
            real = vocab_size  # nanoGPT's habit: GPT-2's 50257 padded to 50304 by hand
        config = GPTConfig(
            n_layer=args["n_layer"],
            n_head=args["n_head"],
            n_embd=args["n_embd"],
            block_size=args["block_size"],
            vocab_size=real,
            padded_vocab_size=max(rows, scaling.padded_vocab(real, pad_vocab_multiple)),
            dropout=dropout,
            bias=args.get("bias", True),  # January 2023 checkpoints predate the flag: biases everywhere
            tie_weights=tied,
        )
    except KeyError as e:
        raise InputError(f"nanoGPT checkpoint {str(path)!r}: model_args lacks {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise InputError(f"nanoGPT checkpoint {str(path)!r}: bad model_args: {e}") from None
    if wte.size(0) != rows:
        raise InputError(
            f"nanoGPT checkpoint {str(path)!r}: model_args says vocab_size {rows}, "
            f"but transformer.wte.weight has {wte.size(0)} rows"
        )
    return config, sd


def _crop_to(model: GPT, block_size: int, source: str) -> None:
    if block_size > model.config.block_size:
        raise InputError(
            f"model.block_size {block_size} exceeds the block size of {source!r} ({model.config.block_size}); "
            "it can only be cropped"
        )
    model.crop_block_size(block_size)


def _check_hub_within_reach(name: str, what: str = "GPT-2") -> None:
    """Fail at once, not after the hub client's ~23 s of retries, when weights that are not in the
    Hugging Face cache would need a hub this machine cannot even look up."""
    import socket
    import urllib.parse

    from huggingface_hub import constants, try_to_load_from_cache

    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return  # cached: transformers finds it without the network
    host = urllib.parse.urlparse(constants.ENDPOINT).hostname
    if constants.HF_HUB_OFFLINE:
        why = "HF_HUB_OFFLINE is set"
    else:
        try:
            socket.getaddrinfo(host, 443)
            return
        except (OSError, UnicodeError) as e:
            why = f"{host} cannot be looked up: {e}; HF_HUB_OFFLINE=1 says so at once to every Hugging Face tool"
    raise InputError(
        f"cannot load {what} weights {name!r}: they are not in the Hugging Face cache ({constants.HF_HUB_CACHE}) "
        f"and the Hugging Face hub is out of reach ({why}). Offline, name a local Hugging Face {what} "
        "directory instead (one `save_pretrained` wrote), or fill the cache on a machine with internet"
    )


def _check_hf_config(hf: Any, source: str) -> None:
    """Refuse Hugging Face GPT-2 variants this architecture would compute differently."""
    problems = []
    if getattr(hf, "model_type", "gpt2") != "gpt2":
        problems.append(f"model_type is {hf.model_type!r}, not 'gpt2'")
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function {act!r} (only GPT-2's tanh GELU, 'gelu_new')")
    inner = getattr(hf, "n_inner", None)
    if inner is not None and inner != 4 * hf.n_embd:
        problems.append(f"n_inner {inner} (the MLP must be 4 * n_embd = {4 * hf.n_embd} wide)")
    eps = getattr(hf, "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        problems.append(f"layer_norm_epsilon {eps} (must be 1e-5)")
    if not getattr(hf, "scale_attn_weights", True) or getattr(hf, "scale_attn_by_inverse_layer_idx", False):
        problems.append("attention scaled other than by 1/sqrt(head size)")
    if getattr(hf, "add_cross_attention", False):
        problems.append("cross-attention layers")
    if problems:
        raise InputError(f"{source!r} is a GPT-2 variant this model does not compute: {'; '.join(problems)}")


def load_pretrained(
    init_from: str,
    *,
    dropout: float = 0.0,
    block_size: Optional[int] = None,
    pad_vocab_multiple: int = 1,
    vocab_size: Optional[int] = None,
    which: str = "best",
) -> GPT:
    """The model `init_from` names: a gpt2* name, a Hugging Face GPT-2 directory, a run directory
    (its `which` checkpoint), or a checkpoint file (this product's or nanoGPT's)."""
    if init_from in GPT2_NAMES:
        return GPT.from_hf(init_from, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple)
    path = Path(init_from)
    if path.is_dir() and (path / "config.json").is_file():
        return GPT.from_hf(init_from, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple)
    if path.exists():
        return GPT.from_checkpoint(
            init_from, dropout=dropout, block_size=block_size, pad_vocab_multiple=pad_vocab_multiple,
            vocab_size=vocab_size, which=which,
        )
    raise InputError(
        f"model.init_from {init_from!r}: no such file or directory, and not one of scratch, {', '.join(GPT2_NAMES)}"
    )


def build_gpt(spec: GPTSpec, *, vocab_size: int) -> GPT:
    """The model a `[model] kind = "gpt"` table describes, for a dataset of `vocab_size` token ids.

    From scratch it is initialised from torch's global RNG (the caller seeds it). From pretrained
    weights, the architecture is the weights'; dropout comes from the spec and the position table is
    cropped to spec.block_size. Weights that disagree with the spec or the dataset are an InputError.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1:
        raise InputError(f"the dataset's vocabulary size must be a positive integer (got {vocab_size!r})")
    if spec.init_from == "scratch":
        model_vocab = vocab_size if spec.vocab_size is None else spec.vocab_size
        if model_vocab < vocab_size:
            raise InputError(
                f"model.vocab_size ({model_vocab}) is smaller than the dataset's vocabulary ({vocab_size}): "
                "token ids would fall outside the embedding; leave model.vocab_size out to take the dataset's"
            )
        return GPT(GPTConfig.from_spec(spec, model_vocab))

    model = load_pretrained(
        spec.init_from,
        dropout=spec.dropout,
        block_size=spec.block_size,
        pad_vocab_multiple=spec.pad_vocab_multiple,
        vocab_size=vocab_size,
    )
    loaded = model.config
    if loaded.vocab_size != vocab_size:
        raise InputError(
            f"model.init_from {spec.init_from!r} has a vocabulary of {loaded.vocab_size} tokens, but the dataset has "
            f"{vocab_size}: pretrained weights need the tokenizer they were trained with (for GPT-2: data.tokenizer = \"gpt2\")"
        )
    stated = {"n_layer": spec.n_layer, "n_head": spec.n_head, "n_embd": spec.n_embd, "bias": spec.bias}
    if spec.vocab_size is not None:
        stated["vocab_size"] = spec.vocab_size
    wrong = [
        f"model.{k} is {v!r} but the weights have {getattr(loaded, k)!r}"
        for k, v in stated.items()
        if getattr(loaded, k) != v and not (k == "vocab_size" and v == loaded.padded_vocab_size)
    ]
    if wrong:
        raise InputError(f"model.init_from {spec.init_from!r} does not match the spec: {'; '.join(wrong)}")
    return model
