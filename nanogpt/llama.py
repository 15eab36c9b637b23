"""
A Llama-style language model, in the manner of model.py: pre-RMSNorm blocks, rotary positions
(RoPE), a SwiGLU MLP, grouped-query attention and no biases, with the parameter names of
transformers' LlamaForCausalLM, so SmolLM, TinyLlama, Llama and their kin map onto it one to one.
References:
1) Meta's reference implementation: https://github.com/meta-llama/llama/blob/main/llama/model.py
2) huggingface/transformers PyTorch implementation:
   https://github.com/huggingface/transformers/blob/main/src/transformers/models/llama/modeling_llama.py

It shares GPT's attention call (SDPA: flash kernels on GPU, no T x T mask), sampling loop and KV
cache, and counts parameters and FLOPs by the same conventions (nanogpt/scaling.py).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import attrs
import torch
import torch.nn as nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from nanogpt import model as gpt
from nanogpt import scaling
from nanogpt.errors import InputError
from nanogpt.spec.pretrained import LLAMA_ARCH_FIELDS, llama_arch_from_hf_config


@attrs.frozen(kw_only=True)
class LlamaConfig:
    """The sizes and switches that make a Llama; everything a checkpoint needs to rebuild one."""

    n_layer: int
    n_head: int
    n_kv_head: int
    """Key/value heads; each is shared by n_head / n_kv_head query heads (grouped-query attention)."""
    n_embd: int
    intermediate_size: int
    block_size: int
    vocab_size: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    dropout: float = 0.0

    def __attrs_post_init__(self) -> None:
        for name in ("n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size", "block_size", "vocab_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LlamaConfig.{name} must be a positive integer (got {value!r})")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head})")
        if self.head_size % 2:
            raise ValueError(f"the head size n_embd / n_head ({self.head_size}) must be even: RoPE rotates pairs")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (got {self.dropout!r})")

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @classmethod
    def from_spec(cls, spec: Any, vocab_size: int) -> LlamaConfig:
        """The config of a `[model] kind = "llama"` table for a vocabulary of `vocab_size` ids."""
        return cls(
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_kv_head=spec.n_kv_head or spec.n_head,
            n_embd=spec.n_embd,
            intermediate_size=spec.intermediate_size or scaling.llama_intermediate_size(spec.n_embd),
            block_size=spec.block_size,
            vocab_size=vocab_size,
            rope_theta=spec.rope_theta,
            norm_eps=spec.norm_eps,
            tie_embeddings=spec.tie_embeddings,
            dropout=spec.dropout,
        )


class KVCache(gpt.KVCache):
    """GPT's cache, holding only the n_kv_head key/value heads: the memory grouped-query attention saves."""

    def __init__(self, config: LlamaConfig, batch_size: int):
        super().__init__(config, batch_size)
        self.shape = (batch_size, config.n_kv_head, config.block_size, config.head_size)


def rope_tables(config: LlamaConfig, device: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
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
        self._reset_rope()
        if config.tie_embeddings:
            self.model.embed_tokens.weight = self.lm_head.weight  # one matrix reads tokens in and writes them out
        self._init_weights()

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
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    # -------------------------------------------------------------------- sizes and FLOPs

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
        n = scaling.llama_params(**attrs.asdict(c))
        if non_embedding or c.tie_embeddings:
            return n
        return n + c.vocab_size * c.n_embd

    def flops_per_token(self) -> int:
        """Training FLOPs per token, 6N + 12·L·H·Q·T, as GPT's (scaling.mfu_flops_per_token): the
        attention term counts the query heads, which grouped-query attention does not reduce."""
        c = self.config
        return scaling.mfu_flops_per_token(
            n_params=self.num_params(), n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd, block_size=c.block_size
        )

    def estimate_mfu(self, tokens_per_sec: float, peak_flops: float) -> float:
        return scaling.mfu(self.flops_per_token(), tokens_per_sec, peak_flops)

    def crop_block_size(self, block_size: int) -> None:
        """A shorter context; RoPE has no table of weights to cut, only its angles to recompute."""
        if not 1 <= block_size <= self.config.block_size:
            raise ValueError(f"block_size must be in 1..{self.config.block_size} (got {block_size})")
        self.config = attrs.evolve(self.config, block_size=block_size)
        self._reset_rope()

    # ------------------------------------------------------------------------- generation

    def new_kv_cache(self, batch_size: int) -> KVCache:
        return KVCache(self.config, batch_size)

    # the same loop as GPT's: rotated keys are cached, so once the window slides (every position
    # shifts) the cache is dropped and each step recomputes the cropped window
    generate_stream = gpt.GPT.generate_stream
    generate = gpt.GPT.generate

    # ------------------------------------------------------------------ pretrained weights

    @classmethod
    def from_state_dict(cls, config: LlamaConfig, sd: dict[str, torch.Tensor], source: str) -> Llama:
        """A model with exactly the tensors of `sd`; a missing, extra or misshapen tensor is an InputError."""
        from nanogpt.checkpoint import state_mismatch

        with torch.device("meta"):  # no time spent initialising weights that are overwritten next
            model = cls(config)
        model = model.to_empty(device="cpu")
        if config.tie_embeddings:  # to_empty gives each module its own new tensor: tie them again
            model.model.embed_tokens.weight = model.lm_head.weight
        model._reset_rope()
        problem = state_mismatch(model.state_dict(), sd)
        if problem is not None:
            raise InputError(f"{source!r} does not hold this architecture's weights: {problem}")
        model.load_state_dict(sd, strict=True)
        return model

    @classmethod
    def from_hf(cls, name_or_dir: str, *, dropout: float = 0.0, block_size: Optional[int] = None) -> Llama:
        """A Hugging Face Llama-architecture model: a local directory (config.json + safetensors),
        or a hub id (downloaded into the Hugging Face cache where the network allows)."""
        directory = _hf_directory(name_or_dir)
        try:
            cfg = json.loads((directory / "config.json").read_text(encoding="utf-8"))
            arch = llama_arch_from_hf_config(cfg, repr(name_or_dir))
        except (OSError, ValueError) as e:  # NotPretrained and JSONDecodeError are ValueErrors
            raise InputError(f"cannot load Llama weights {name_or_dir!r}: {e}") from None
        config = LlamaConfig(**{k: v for k, v in arch.items() if k != "vocab_size"}, vocab_size=arch["vocab_size"],
                             dropout=dropout)
        sd = {key: t.float() for key, t in _read_safetensors(directory, name_or_dir).items()}
        # float32 whatever the files hold: training casts through autocast, not through the weights
        sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}  # older transformers saved it
        if config.tie_embeddings and "model.embed_tokens.weight" in sd:
            sd["lm_head.weight"] = sd["model.embed_tokens.weight"]  # save_pretrained writes a tied matrix once
        model = cls.from_state_dict(config, sd, name_or_dir)
        if block_size is not None:
            if block_size > config.block_size:
                raise InputError(
                    f"model.block_size {block_size} exceeds the context of {name_or_dir!r} ({config.block_size})"
                )
            model.crop_block_size(block_size)
        return model


def _hf_directory(name_or_dir: str) -> Path:
    """The local directory of a Hugging Face model: the path itself, or the hub id's snapshot."""
    path = Path(name_or_dir)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InputError(f"{name_or_dir!r} is not a Hugging Face model directory: it has no config.json")
        return path
    from huggingface_hub import snapshot_download

    gpt._check_hub_within_reach(name_or_dir, what="Llama")
    try:
        return Path(snapshot_download(name_or_dir, allow_patterns=["*.json", "*.safetensors"]))
    except Exception as e:  # noqa: BLE001 - the hub client raises many kinds; all mean "not loadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"cannot load {name_or_dir!r} from the Hugging Face hub: {first}") from None


def _read_safetensors(directory: Path, source: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise InputError(f"{source!r}: cannot read {index.name}: {e}") from None
        files = [directory / s for s in shards]
    else:
        files = [directory / "model.safetensors"]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise InputError(
            f"{source!r} has no {', '.join(missing)}: Llama weights are read from safetensors files only "
            "(a pytorch_model.bin would need unpickling)"
        )
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            sd.update(load_file(str(f)))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for bad files
            raise InputError(f"{source!r}: {f.name} is not a readable safetensors file: {e}") from None
    return sd


def build_llama(spec: Any, *, vocab_size: int) -> Llama:
    """The model a `[model] kind = "llama"` table describes, for a dataset of `vocab_size` token ids.

    From scratch it is initialised from torch's global RNG (the caller seeds it); from a Hugging
    Face Llama its architecture is the weights', dropout comes from the spec and the context is
    cropped to spec.block_size. Weights that disagree with the dataset are an InputError.
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
        return Llama(LlamaConfig.from_spec(spec, model_vocab))
    model = load_llama(spec.init_from, dropout=spec.dropout, block_size=spec.block_size)
    loaded = model.arch()
    # `check` fills and compares these from the weights' config; a hub model it could not reach is compared here
    wrong = [
        f"model.{k} is {getattr(spec, k)!r} but the weights have {loaded[k]!r}"
        for k in LLAMA_ARCH_FIELDS
        if k not in ("block_size", "vocab_size") and getattr(spec, k) is not None and getattr(spec, k) != loaded[k]
    ]
    if wrong:
        raise InputError(f"model.init_from {spec.init_from!r} does not match the spec: {'; '.join(wrong)}")
    if model.config.vocab_size < vocab_size:
        raise InputError(
            f"model.init_from {spec.init_from!r} has a vocabulary of {model.config.vocab_size} tokens, but the dataset "
            f"has {vocab_size}: pretrained weights need the tokenizer they were trained with (data.tokenizer = \"hf:...\")"
        )
    return model


def load_llama(init_from: str, *, dropout: float = 0.0, block_size: Optional[int] = None, which: str = "best") -> Llama:
    """The Llama `init_from` names: a Hugging Face directory or hub id, a run directory (its `which`
    checkpoint) or a checkpoint file of this product."""
    path = Path(init_from)
    if (path.is_dir() and (path / "config.json").is_file()) or not path.exists():
        return Llama.from_hf(init_from, dropout=dropout, block_size=block_size)
    from nanogpt.checkpoint import checkpoint_for, load_checkpoint

    if path.is_dir():
        path = checkpoint_for(path, which)
    state = load_checkpoint(path)
    model = from_checkpoint_state(state, str(path), dropout=dropout)
    if block_size is not None:
        if block_size > model.config.block_size:
            raise InputError(f"model.block_size {block_size} exceeds the block size of {str(path)!r} ({model.config.block_size})")
        model.crop_block_size(block_size)
    return model


def from_checkpoint_state(state: dict[str, Any], source: str, *, dropout: float = 0.0) -> Llama:
    """The Llama a checkpoint of this product holds (its `model_arch` says kind "llama")."""
    arch = dict(state.get("model_arch") or {})
    sd = state.get("model")
    if arch.pop("kind", None) != "llama" or not isinstance(sd, dict):
        raise InputError(f"checkpoint {source!r} holds no llama model (model_arch.kind is not 'llama')")
    try:
        config = LlamaConfig(**arch, dropout=dropout)
    except (TypeError, ValueError) as e:
        raise InputError(f"checkpoint {source!r}: bad model_arch: {e}") from None
    return Llama.from_state_dict(config, gpt._strip_prefixes(sd), source)

