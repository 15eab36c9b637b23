"""One frozen attrs class per TOML table of an experiment spec.

The string after each field is its documentation: `nanogpt schema` turns it into the field's
description, so TOML editors show it on hover. Field validators check one value; `cross_checks`
checks fields against each other and yields every problem rather than stopping at the first.
Nothing here imports torch.
"""

from __future__ import annotations

import itertools
import posixpath
import re
from collections.abc import Iterator
from typing import ClassVar, Literal, Optional

import attrs

from nanogpt.config.checks import MODULE, SAFE_NAME, SHA256, Each, Length, Pattern, Unique, above, at_least, at_most, below
from nanogpt.config.problems import Problem

# The pretrained names `model.init_from` understands besides paths.
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")
SOURCE_SCHEMES = ("embedded", "url", "file", "hf", "bin")
EMBEDDED_CORPORA = ("shakespeare",)


class ComponentSpec:
    """Base of the tables chosen by `kind` from a registry (model, data, optimizer, schedule)."""

    kind: str

    def cross_checks(self) -> Iterator[Problem]:
        """Problems between this table's own fields; paths are relative to the table."""
        return iter(())


@attrs.frozen(kw_only=True)
class ModelSpec(ComponentSpec):
    """A `[model]` table; the concrete class is picked by its `kind`.

    The fields every model has live here, so the spec half and the runner know them without naming
    a kind (a kind's class may declare them again, to document or place them).

    What a kind reads from pretrained weights it declares here, so that `check` fills and compares
    a plugin kind's architecture as it does the built-in ones', with no branch on the kind's name."""

    ARCH_FIELDS: ClassVar[tuple[str, ...]] = ()
    """Fields that are properties of the weights, not of the training. Left out of a spec whose
    `init_from` names weights (a run, a checkpoint, a Hugging Face model), they come from those
    weights; stated, they must agree (`block_size` may be smaller). Empty: nothing is read."""
    UNRECORDED_ARCH_DEFAULTS: ClassVar[tuple[str, ...]] = ()
    """ARCH_FIELDS that weights written before the field existed (or by another program: Hugging Face's,
    nanoGPT's) do not record: read from such weights, each is its default (what those weights compute)."""
    HF_MODEL_TYPE: ClassVar[Optional[str]] = None
    """The Hugging Face `model_type` (config.json) this kind imports, whose reader in
    `nanogpt.config.pretrained.HF_ARCHS` gives its ARCH_FIELDS; None: it takes no Hugging Face model."""

    block_size: int = attrs.field(default=1024, validator=at_least(1))
    """Context length in tokens: the longest sequence the model takes, and the length of every training window."""
    dropout: float = attrs.field(default=0.0, validator=[at_least(0.0), below(1.0)])
    """Dropout probability."""
    init_from: str = attrs.field(default="scratch", validator=Pattern(r".+", "a non-empty string"))
    """Where the weights start: "scratch", or the weights a run directory or checkpoint holds."""


class DataSpec(ComponentSpec):
    """A `[data]` table; the concrete class is picked by its `kind`."""


class OptimizerSpec(ComponentSpec):
    """An `[optimizer]` table; the concrete class is picked by its `kind`."""

    lr: float


class ScheduleSpec(ComponentSpec):
    """A `[schedule]` table; the concrete class is picked by its `kind`."""


def _divisible(name: str, value: int, by_name: str, by: int) -> Iterator[Problem]:
    if by > 0 and value % by:
        yield Problem(name, f"{value} must be divisible by {by_name} ({by})")


def _not_above(name: str, value: float, limit_name: str, limit: float) -> Iterator[Problem]:
    if value > limit:
        yield Problem(name, f"{value!r} must not exceed {limit_name} ({limit!r})")


MAX_PROCESS_BYTES = 1 << 44
"""16 TiB: more memory than any one machine has. A spec needing more for one process (its model with
its optimizer state, or one micro-batch's token ids) fails `check` instead of the allocator failing at
run time."""


def _bytes(n: float) -> str:
    return next(f"{n / 2**k:,.1f} {unit}" for k, unit in ((60, "EiB"), (50, "PiB"), (40, "TiB"), (0, "bytes")) if n >= 2**k)


def _fits_one_machine(n_params: int) -> Iterator[Problem]:
    # fp32 weights, their gradients and AdamW's two moments: every process holds all of them (DDP)
    if 16 * n_params > MAX_PROCESS_BYTES:
        yield Problem("", f"has {n_params:.3g} parameters: with their gradients and optimizer state, {_bytes(16 * n_params)}, "
                          f"more than any one machine holds ({_bytes(MAX_PROCESS_BYTES)}); each process holds the whole model")


# --------------------------------------------------------------------------------------- model


@attrs.frozen(kw_only=True)
class GPTSpec(ModelSpec):
    """GPT-2's decoder-only transformer: pre-LayerNorm blocks, learned positions, GELU MLP."""

    ARCH_FIELDS = ("n_layer", "n_head", "n_embd", "block_size", "vocab_size", "bias",
                   "position", "rope_theta", "norm", "qk_norm", "mlp", "logit_softcap")
    UNRECORDED_ARCH_DEFAULTS = ("position", "rope_theta", "norm", "qk_norm", "mlp", "logit_softcap")
    HF_MODEL_TYPE = "gpt2"

    kind: str = "gpt"
    """Registry name of the model."""
    n_layer: int = attrs.field(default=12, validator=at_least(1))
    """Number of transformer blocks."""
    n_head: int = attrs.field(default=12, validator=at_least(1))
    """Attention heads per block; must divide `n_embd`."""
    n_embd: int = attrs.field(default=768, validator=at_least(1))
    """Width of the residual stream."""
    block_size: int = attrs.field(default=1024, validator=at_least(1))
    """Context length in tokens. Below a pretrained model's, its position table is cropped."""
    vocab_size: Optional[int] = attrs.field(default=None, validator=at_least(1))
    """Vocabulary size; left out, it comes from the dataset (or the pretrained model)."""
    pad_vocab_multiple: int = attrs.field(default=64, validator=at_least(1))
    """Round the embedding rows up to a multiple of this when that adds at most 1% rows (50257 -> 50304 pays on GPUs; 65 -> 128 would not). 1 disables."""
    dropout: float = attrs.field(default=0.0, validator=[at_least(0.0), below(1.0)])
    """Dropout probability; 0 for pretraining, 0.1+ is worth trying when finetuning."""
    bias: bool = True
    """Biases in Linear and LayerNorm layers, as GPT-2 has."""
    tie_weights: bool = True
    """Share the token embedding with the output head, as GPT-2 does."""
    init: Literal["gpt2", "pytorch"] = "gpt2"
    """Weight initialisation: "gpt2" (normal std 0.02, residual projections scaled by 1/sqrt(2*n_layer)) or "pytorch" (each layer's default)."""
    position: Literal["learned", "rope"] = "learned"
    """Positions: "learned" (GPT-2's table of block_size x n_embd) or "rope" (rotary positions on queries and keys, no weights; needs an even head size n_embd / n_head)."""
    rope_theta: float = attrs.field(default=10000.0, validator=above(0.0))
    """Base of RoPE's rotation frequencies, with `position = "rope"`."""
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    """The blocks' and the final norm: "layernorm" (GPT-2) or "rmsnorm" (a gain, no bias, no mean subtracted)."""
    qk_norm: bool = False
    """RMS-normalise each head's queries and keys (no gain) before attention, as the GPT-2 speedrun does."""
    mlp: Literal["gelu", "relu2", "swiglu"] = "gelu"
    """The MLP: "gelu" (GPT-2), "relu2" (ReLU squared, the speedrun's; 4 * n_embd wide) or "swiglu" (SiLU-gated, three matrices, Llama's width: 2/3 of 4 * n_embd rounded up to a multiple of 256)."""
    logit_softcap: Optional[float] = attrs.field(default=None, validator=above(0.0))
    """Cap the logits smoothly, cap * tanh(logits / cap) (the speedrun uses 15 to 30); left out, no cap."""
    zero_init_residual: bool = False
    """Every output projection (attn.c_proj, mlp.c_proj) starts at zero, so each block starts as the identity."""
    init_from: str = attrs.field(default="scratch", validator=Pattern(r".+", "a non-empty string"))
    """Where the weights start: "scratch", "gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl", a local Hugging Face GPT-2 model directory, or a run directory or checkpoint file (this product's or nanoGPT's)."""

    def cross_checks(self) -> Iterator[Problem]:
        yield from _divisible("n_embd", self.n_embd, "model.n_head", self.n_head)
        if self.position == "rope" and self.n_embd % self.n_head == 0 and (self.n_embd // self.n_head) % 2:
            yield Problem("position", f"'rope' needs an even head size, but model.n_embd / model.n_head = "
                                      f"{self.n_embd} / {self.n_head} = {self.n_embd // self.n_head}: RoPE rotates pairs")
        from nanogpt.config import sizes

        n = sizes.params(n_layer=self.n_layer, n_head=1, n_embd=self.n_embd, block_size=self.block_size,
                           vocab_size=self.vocab_size or 1, bias=self.bias, norm=self.norm, mlp=self.mlp)
        yield from _fits_one_machine(n + sizes.embedding_params(n_embd=self.n_embd, block_size=self.block_size,
                                                                vocab_size=1, position=self.position))


@attrs.frozen(kw_only=True)
class LlamaSpec(ModelSpec):
    """Llama's decoder-only transformer: pre-RMSNorm blocks, rotary positions (RoPE), SwiGLU MLP, grouped-query attention, no biases."""

    ARCH_FIELDS = (
        "n_layer", "n_head", "n_kv_head", "n_embd", "intermediate_size", "block_size", "vocab_size",
        "rope_theta", "norm_eps", "tie_embeddings",
    )
    HF_MODEL_TYPE = "llama"

    kind: str = "llama"
    """Registry name of the model."""
    n_layer: int = attrs.field(default=12, validator=at_least(1))
    """Number of transformer blocks."""
    n_head: int = attrs.field(default=12, validator=at_least(1))
    """Query heads per block; must divide `n_embd`."""
    n_kv_head: Optional[int] = attrs.field(default=None, validator=at_least(1))
    """Key/value heads (grouped-query attention); must divide `n_head`. Left out, `n_head` (plain multi-head attention)."""
    n_embd: int = attrs.field(default=768, validator=at_least(1))
    """Width of the residual stream."""
    intermediate_size: Optional[int] = attrs.field(default=None, validator=at_least(1))
    """Hidden width of the SwiGLU MLP. Left out, Llama's rule: 2/3 of 4 * n_embd, rounded up to a multiple of 256."""
    block_size: int = attrs.field(default=1024, validator=at_least(1))
    """Context length in tokens. Below a pretrained model's, the model is used on shorter contexts."""
    vocab_size: Optional[int] = attrs.field(default=None, validator=at_least(1))
    """Vocabulary size; left out, it comes from the dataset (or the pretrained model)."""
    rope_theta: float = attrs.field(default=10000.0, validator=above(0.0))
    """Base of RoPE's rotation frequencies (Llama 2: 10000; Llama 3: 500000)."""
    norm_eps: float = attrs.field(default=1e-5, validator=above(0.0))
    """Epsilon of the RMSNorms."""
    tie_embeddings: bool = False
    """Share the token embedding with the output head (small Llamas such as SmolLM do; Llama 2 does not)."""
    dropout: float = attrs.field(default=0.0, validator=[at_least(0.0), below(1.0)])
    """Dropout probability; 0 for pretraining, 0.1+ is worth trying when finetuning."""
    init_from: str = attrs.field(default="scratch", validator=Pattern(r".+", "a non-empty string"))
    """Where the weights start: "scratch", a local Hugging Face Llama-architecture model directory (config.json + safetensors), a Hugging Face hub id, or a run directory or checkpoint file of a llama run."""

    def cross_checks(self) -> Iterator[Problem]:
        yield from _divisible("n_embd", self.n_embd, "model.n_head", self.n_head)
        if self.n_kv_head is not None:
            yield from _divisible("n_head", self.n_head, "model.n_kv_head", self.n_kv_head)
        if self.n_embd % self.n_head == 0 and (self.n_embd // self.n_head) % 2:
            yield Problem("n_embd", f"{self.n_embd} / model.n_head ({self.n_head}) must be an even head size: RoPE rotates pairs")
        from nanogpt.config import sizes

        n = sizes.llama_params(n_layer=self.n_layer, n_head=self.n_head, n_kv_head=min(self.n_kv_head or self.n_head, self.n_head),
                                 n_embd=self.n_embd, intermediate_size=self.intermediate_size or sizes.llama_intermediate_size(self.n_embd),
                                 vocab_size=self.vocab_size or 1)
        yield from _fits_one_machine(n)


# ---------------------------------------------------------------------------------------- data


def _check_source(inst: TokensSpec, attribute: attrs.Attribute, value: Optional[str]) -> None:
    if value is None:
        return
    scheme, sep, rest = value.partition(":")
    if not sep or scheme not in SOURCE_SCHEMES:
        raise ValueError(
            f"must start with one of {', '.join(s + ':' for s in SOURCE_SCHEMES)} (got {value!r})"
        )
    if not rest:
        raise ValueError(f"names nothing after '{scheme}:' (got {value!r})")
    if scheme == "embedded" and rest not in EMBEDDED_CORPORA:
        raise ValueError(
            f"unknown embedded corpus {rest!r} (known: {', '.join(EMBEDDED_CORPORA)})"
        )
    if scheme == "url" and not re.match(r"https?://[^/\s]+", rest):
        raise ValueError(f"must be url:http(s)://... (got {value!r})")
    if scheme == "hf":
        hf_id, at, revision = rest.partition(":")[0].partition("@")
        if not hf_id or (at and not revision):
            raise ValueError(f"must be hf:DATASET_ID[@REVISION][:CONFIG] (got {value!r})")
    if scheme in ("file", "bin") and _glob_starts_at_the_root(rest):
        raise ValueError(
            f"is a glob that starts at the filesystem root, so it would search the whole file system; "
            f"start it in the directory that holds the files, e.g. 'file:/data/**/*.txt' (got {value!r})"
        )


def _glob_starts_at_the_root(pattern: str) -> bool:
    """Whether a file: glob has no directory of its own before its first wildcard: `/**/x.txt`, `/*/y`."""
    parts = posixpath.normpath(pattern).split("/")
    literal = list(itertools.takewhile(lambda part: not re.search(r"[*?\[]", part), parts))
    return len(literal) < len(parts) and pattern.startswith("/") and not any(literal)


@attrs.frozen(kw_only=True)
class TokensSpec(DataSpec):
    """Token ids in `<data_dir>/<dataset>/{train,val}.bin` with a `meta.json`, built by `prepare` from `source`."""

    kind: str = "tokens"
    """Registry name of the data pipeline."""
    dataset: str = attrs.field(default="openwebtext", validator=SAFE_NAME)
    """Name of the dataset's folder under `data_dir`."""
    data_dir: str = attrs.field(default="data", validator=Pattern(r".+", "a non-empty path"))
    """Folder holding the datasets, relative to the working directory."""
    source: Optional[str] = attrs.field(default=None, validator=_check_source)
    """Where `prepare` gets text: "bin:GLOB" (llm.c/modded-nanogpt token shards, read in place; names holding "val" are val), "embedded:shakespeare", "url:https://...", "file:path/or/glob" (a text file, files of documents, .jsonl or .parquet), or "hf:<dataset id>[@<revision>][:<config>]" (a dataset script is read from the hub's parquet conversion, refs/convert/parquet). Left out, the files must exist already."""
    source_sha256: Optional[str] = attrs.field(default=None, validator=SHA256)
    """Pin for a url: (or single file:) source: its sha256; a download that differs is refused."""
    text_column: str = "text"
    """Column holding the text in .jsonl, .parquet and Hugging Face sources."""
    tokenizer: str = attrs.field(default="gpt2", validator=Pattern(r"gpt2|char|hf:.+", '"gpt2", "char" or "hf:PATH_OR_ID"'))
    """"gpt2": GPT-2's BPE (tiktoken's ids); "char": one id per distinct character of the corpus; "hf:PATH_OR_ID": a Hugging Face tokenizer (a tokenizer.json, a directory holding one, or a hub id), documents separated by its end-of-sequence token, no BOS added."""
    val_fraction: float = attrs.field(default=0.0005, validator=[above(0.0), below(1.0)])
    """Share of the corpus held out for validation."""
    split: Literal["random", "contiguous"] = "random"
    """"random": documents shuffled with `split_seed`, then split; "contiguous": the last `val_fraction` of the text is val."""
    split_seed: int = attrs.field(default=2357, validator=at_least(0))
    """Seed of the random document split (nanoGPT's OpenWebText split uses 2357)."""
    num_proc: int = attrs.field(default=0, validator=at_least(0))
    """Tokenizer worker processes; 0 uses every core."""
    val_tokens: int = attrs.field(default=0, validator=at_least(0))
    """A fixed validation set: the first `val_tokens` tokens of val, evaluated in full and in order (the speedrun's is 10,485,760) in place of `eval_iters` random windows; 0 keeps the random windows. Must be a multiple of batch_size x block_size."""
    align: Literal["token", "document"] = "token"
    """Where a training window may start: "token", anywhere; "document", only at a document's first token (after an end-of-text token, BOS-aligned as nanochat and the speedrun)."""
    shard_tokens: int = attrs.field(default=100_000_000, validator=at_least(1))
    """Most tokens per file: a bigger split is written as shards `train_000000.bin`, ... (one that fits stays `train.bin`)."""

    def cross_checks(self) -> Iterator[Problem]:
        if self.source_sha256 is not None and not (self.source or "").startswith(("url:", "file:")):
            yield Problem("source_sha256", "only applies to a url: or file: source")
        if (self.source or "").startswith("bin:") and self.tokenizer != "gpt2":
            yield Problem("tokenizer", f"{self.source!r} names llm.c shards of GPT-2 token ids: use tokenizer = \"gpt2\"")
        if self.split == "random" and (self.source or "").startswith("embedded:"):
            yield Problem(
                "split", f"'random' shuffles documents, but {self.source!r} is one stream of text: "
                "use split = \"contiguous\""
            )


# ----------------------------------------------------------------------------------- optimizer


@attrs.frozen(kw_only=True)
class AdamWSpec(OptimizerSpec):
    """AdamW with weight decay on matrices only (biases, LayerNorm and embeddings are not decayed)."""

    kind: str = "adamw"
    """Registry name of the optimizer."""
    lr: float = attrs.field(default=6e-4, validator=above(0.0))
    """Peak learning rate (the schedule scales it)."""
    weight_decay: float = attrs.field(default=0.1, validator=at_least(0.0))
    """Decoupled weight decay on 2-D weights."""
    betas: tuple[float, ...] = attrs.field(
        default=(0.9, 0.95), validator=[Length(2), Each((at_least(0.0), below(1.0)))]
    )
    """Adam's (beta1, beta2)."""
    eps: float = attrs.field(default=1e-8, validator=above(0.0))
    """Adam's epsilon."""
    grad_clip: float = attrs.field(default=1.0, validator=at_least(0.0))
    """Clip the global gradient norm to this; 0 disables."""
    fused: Optional[bool] = None
    """Fused AdamW kernel; left out, used on CUDA and CPU, where torch has one."""


@attrs.frozen(kw_only=True)
class SGDSpec(OptimizerSpec):
    """Stochastic gradient descent with momentum."""

    kind: str = "sgd"
    """Registry name of the optimizer."""
    lr: float = attrs.field(default=0.1, validator=above(0.0))
    """Peak learning rate (the schedule scales it)."""
    momentum: float = attrs.field(default=0.9, validator=[at_least(0.0), below(1.0)])
    """Momentum factor."""
    nesterov: bool = False
    """Nesterov momentum."""
    weight_decay: float = attrs.field(default=0.0, validator=at_least(0.0))
    """L2 penalty on 2-D weights."""
    grad_clip: float = attrs.field(default=1.0, validator=at_least(0.0))
    """Clip the global gradient norm to this; 0 disables."""

    def cross_checks(self) -> Iterator[Problem]:
        if self.nesterov and self.momentum == 0:
            yield Problem("nesterov", "needs optimizer.momentum above 0 (got 0.0)")


@attrs.frozen(kw_only=True)
class MuonSpec(OptimizerSpec):
    """Muon (torch.optim.Muon: orthogonalised momentum) on the 2-D weight matrices inside the transformer blocks, AdamW on everything else (embeddings, the output head, norms' gains, biases), as one optimizer; which parameter is which is the model kind's own rule (`param_roles`). Each group's rate is its own base rate times the schedule's multiplier (the schedule's rate at the step over `lr`)."""

    kind: str = "muon"
    """Registry name of the optimizer."""
    lr: float = attrs.field(default=0.02, validator=above(0.0))
    """Muon's peak learning rate, before `adjust_lr_fn` scales it per matrix (the schedule scales it)."""
    momentum: float = attrs.field(default=0.95, validator=[at_least(0.0), below(1.0)])
    """Muon's momentum factor."""
    nesterov: bool = True
    """Nesterov momentum for Muon."""
    ns_steps: int = attrs.field(default=5, validator=[at_least(1), below(100)])
    """Newton-Schulz iterations that orthogonalise each update (torch takes fewer than 100)."""
    weight_decay: float = attrs.field(default=0.0, validator=at_least(0.0))
    """Decoupled weight decay on Muon's matrices."""
    adjust_lr_fn: Literal["original", "match_rms_adamw"] = "original"
    """How Muon scales its rate by a matrix's shape A x B: "original" by sqrt(max(1, A/B)) (Keller Jordan's); "match_rms_adamw" by 0.2 sqrt(max(A, B)) (Moonshot's, so that AdamW's rate and decay carry over)."""
    adam_lr: float = attrs.field(default=6e-4, validator=above(0.0))
    """Peak learning rate of the AdamW groups (embeddings, head, other) unless `embed_lr` or `head_lr` says otherwise."""
    adam_betas: tuple[float, ...] = attrs.field(
        default=(0.9, 0.95), validator=[Length(2), Each((at_least(0.0), below(1.0)))]
    )
    """AdamW's (beta1, beta2)."""
    adam_eps: float = attrs.field(default=1e-8, validator=above(0.0))
    """AdamW's epsilon."""
    adam_weight_decay: float = attrs.field(default=0.0, validator=at_least(0.0))
    """Decoupled weight decay of the AdamW groups' matrices (embeddings, head); gains and biases are never decayed."""
    embed_lr: Optional[float] = attrs.field(default=None, validator=above(0.0))
    """Peak learning rate of the embeddings; left out, `adam_lr`."""
    head_lr: Optional[float] = attrs.field(default=None, validator=above(0.0))
    """Peak learning rate of an untied output head; left out, `adam_lr` (a head tied to the token embedding is an embedding)."""
    grad_clip: float = attrs.field(default=1.0, validator=at_least(0.0))
    """Clip the global gradient norm to this; 0 disables."""

    def cross_checks(self) -> Iterator[Problem]:
        if self.nesterov and self.momentum == 0:
            yield Problem("nesterov", "needs optimizer.momentum above 0 (got 0.0)")


# ------------------------------------------------------------------------------------ schedule


def _warmup_within_decay(spec: CosineSpec | LinearSpec) -> Iterator[Problem]:
    yield from _not_above(
        "warmup_iters", spec.warmup_iters, "schedule.decay_iters", spec.decay_iters
    )


@attrs.frozen(kw_only=True)
class CosineSpec(ScheduleSpec):
    """Linear warmup to the optimizer's lr, cosine decay to `min_lr` at `decay_iters`, then flat."""

    kind: str = "cosine"
    """Registry name of the schedule."""
    warmup_iters: int = attrs.field(default=2000, validator=at_least(0))
    """Iterations of linear warmup."""
    decay_iters: int = attrs.field(default=600000, validator=at_least(1))
    """Iteration at which the decay reaches `min_lr` (about `train.max_iters`, per Chinchilla)."""
    min_lr: float = attrs.field(default=6e-5, validator=at_least(0.0))
    """Floor of the decay (about lr/10, per Chinchilla)."""

    def cross_checks(self) -> Iterator[Problem]:
        yield from _warmup_within_decay(self)


@attrs.frozen(kw_only=True)
class LinearSpec(ScheduleSpec):
    """Linear warmup, then a straight line down to `min_lr` at `decay_iters`, then flat."""

    kind: str = "linear"
    """Registry name of the schedule."""
    warmup_iters: int = attrs.field(default=2000, validator=at_least(0))
    """Iterations of linear warmup."""
    decay_iters: int = attrs.field(default=600000, validator=at_least(1))
    """Iteration at which the decay reaches `min_lr`."""
    min_lr: float = attrs.field(default=6e-5, validator=at_least(0.0))
    """Floor of the decay."""

    def cross_checks(self) -> Iterator[Problem]:
        yield from _warmup_within_decay(self)


@attrs.frozen(kw_only=True)
class ConstantSpec(ScheduleSpec):
    """The optimizer's lr throughout, after an optional linear warmup."""

    kind: str = "constant"
    """Registry name of the schedule."""
    warmup_iters: int = attrs.field(default=0, validator=at_least(0))
    """Iterations of linear warmup."""


@attrs.frozen(kw_only=True)
class WSDSpec(ScheduleSpec):
    """Warmup-stable-decay: warmup, the peak lr held, then a cooldown to `min_lr` ending at `decay_iters`."""

    kind: str = "wsd"
    """Registry name of the schedule."""
    warmup_iters: int = attrs.field(default=2000, validator=at_least(0))
    """Iterations of linear warmup."""
    decay_iters: int = attrs.field(default=600000, validator=at_least(1))
    """Iteration at which the cooldown ends at `min_lr`."""
    cooldown_fraction: float = attrs.field(default=0.2, validator=[above(0.0), at_most(1.0)])
    """Share of `decay_iters` spent cooling down (the last 20% by default)."""
    cooldown: Literal["linear", "sqrt", "cosine"] = "linear"
    """Shape of the cooldown: "linear", "sqrt" (1 - sqrt, as in MiniCPM) or "cosine"."""
    min_lr: float = attrs.field(default=0.0, validator=at_least(0.0))
    """lr at the end of the cooldown."""

    @property
    def cooldown_iters(self) -> int:
        # min(): a float product can round above a decay_iters near 2**63.
        return min(self.decay_iters, round(self.decay_iters * self.cooldown_fraction))

    def cross_checks(self) -> Iterator[Problem]:
        stable_end = self.decay_iters - self.cooldown_iters
        if self.warmup_iters > stable_end:
            yield Problem(
                "warmup_iters",
                f"{self.warmup_iters} must not run into the cooldown, which starts at iteration "
                f"{stable_end} (schedule.decay_iters * schedule.cooldown_fraction)",
            )


# ------------------------------------------------------------------------- the fixed tables


@attrs.frozen(kw_only=True)
class TrainSpec:
    """How long and how big: batches, iterations, evaluation and checkpoint cadence."""

    batch_size: int = attrs.field(default=12, validator=at_least(1))
    """Sequences per micro-batch, per process."""
    grad_accum: int = attrs.field(default=40, validator=at_least(1))
    """Micro-batches per optimizer step, summed over ALL processes (must divide by the world size). One step sees batch_size * grad_accum * block_size tokens whatever the number of processes."""
    max_iters: int = attrs.field(default=600000, validator=at_least(0))
    """Optimizer steps to train for."""
    eval_interval: int = attrs.field(default=1000, validator=at_least(1))
    """Evaluate (and checkpoint) every this many iterations, and at the end."""
    eval_iters: int = attrs.field(default=200, validator=at_least(1))
    """Batches per loss estimate; they are the same fixed batches at every evaluation."""
    log_interval: int = attrs.field(default=10, validator=at_least(1))
    """Log the training loss every this many iterations (the only steps that sync with the device)."""
    eval_only: bool = False
    """Evaluate the initial model and stop (baselines of pretrained checkpoints)."""
    keep_checkpoints: int = attrs.field(default=2, validator=at_least(1))
    """How many of the latest checkpoints to keep; the best by val loss is kept as well."""
    async_checkpoint: bool = True
    """Write checkpoints in the background: the loop waits only for a copy of the state in CPU memory (under fsdp, DCP's async_save), not for the disk. false: each checkpoint is on disk before training goes on."""
    auto_resume: bool = False
    """`run SPEC` continues the newest unfinished run of this name and spec (interrupted, failed on a fault, or left `running` by a killed process; never a completed one or one a live process holds) from its latest verified checkpoint, instead of starting a new run: for torchrun restarts and a scheduler's requeue."""

    def cross_checks(self) -> Iterator[Problem]:
        if self.max_iters == 0 and not self.eval_only:
            yield Problem("max_iters", "must be at least 1 unless train.eval_only is true (got 0)")


DEVICE = Pattern(r"auto|cpu|mps|cuda(:[0-9]+)?", '"auto", "cpu", "cuda", "cuda:N" or "mps"')


@attrs.frozen(kw_only=True)
class SystemSpec:
    """Where and how the numbers are computed."""

    device: str = attrs.field(default="auto", validator=DEVICE)
    """"auto" (CUDA if present, else CPU), "cpu", "cuda", "cuda:N" or "mps". Under torchrun each process takes cuda:LOCAL_RANK ("cuda:N" is refused there: it would put every process on one GPU; choose GPUs with CUDA_VISIBLE_DEVICES)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Autocast precision: "auto" is bfloat16 where the hardware computes it (most GPUs; CPUs with AVX512-BF16 or AMX), float16 (with a gradient scaler) on older GPUs, float32 elsewhere."""
    compile: bool = True
    """Compile the model with torch.compile (slower start, faster steps)."""
    deterministic: bool = False
    """Deterministic algorithms only (bit-identical GPU runs, at some speed)."""
    tf32: bool = True
    """TensorFloat-32 matmuls on Ampere and newer GPUs."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """Process-group backend under torchrun: "auto" is nccl on CUDA, gloo on CPU."""
    collective_timeout_minutes: float = attrs.field(default=30.0, validator=above(0.0))
    """How long a collective (a gradient all-reduce, a stop-flag check) waits for the other processes before the job fails, as torch's process-group timeout. Waiting for rank 0 to prepare the data is not bounded by it."""
    peak_tflops: Optional[float] = attrs.field(default=None, validator=above(0.0))
    """The device's peak TFLOP/s at `dtype`, for MFU; left out, it is looked up from the device name."""
    activation_checkpointing: Literal["none", "blocks"] = "none"
    """"blocks": keep only each transformer block's input in the forward and recompute the block in the backward, for about a third more compute and a fraction of the activation memory (`nanogpt scaling memory` gives both); the numbers trained are the same."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """How the processes of a job share the model: "ddp", a whole copy of weights, gradients and optimizer state on each; "fsdp", each transformer block and the root sharded over all of them with FSDP2 (`fully_shard`), its checkpoints sharded DCP directories that resume on any number of processes. Under fsdp a bfloat16 `dtype` keeps bfloat16 copies of the weights for compute and float32 master weights and gradient reduction (FSDP's MixedPrecisionPolicy) instead of autocast."""
    reshard_after_forward: bool = True
    """fsdp: free each block's gathered weights after its forward and gather them again for the backward (less memory, one more all-gather per block); false keeps them until the backward. The root's (embeddings, head) are kept either way: its backward comes right after its forward."""

    def cross_checks(self) -> Iterator[Problem]:
        if self.parallel == "fsdp" and self.dtype == "float16":
            yield Problem("dtype", "'float16' cannot be used with system.parallel = 'fsdp' (its gradient scaler does not shard); use 'bfloat16' or 'float32'")


@attrs.frozen(kw_only=True)
class LoggingSpec:
    """What the run leaves behind and where."""

    out_dir: str = attrs.field(default="runs", validator=Pattern(r".+", "a non-empty path"))
    """Runs go to <out_dir>/<name>/<run_id>/."""
    run_id: Optional[str] = attrs.field(default=None, validator=SAFE_NAME)
    """Name of the run's directory; left out, a timestamp with a random suffix."""
    tensorboard: bool = True
    """Write TensorBoard event files into the run directory; false turns TensorBoard off whatever `trackers` names."""
    trackers: tuple[Literal["tensorboard", "wandb", "mlflow"], ...] = attrs.field(default=("tensorboard",), validator=Unique())
    """Where rank 0 also sends the metrics (metrics.jsonl is always written): "tensorboard" (event files in the run directory), "wandb" (Weights & Biases, `pip install 'nanogpt[wandb]'`), "mlflow" (`pip install 'nanogpt[mlflow]'`). A tracker that cannot start or fails is reported once and the run goes on; the manifest's `trackers` says which ran."""
    wandb_mode: Literal["offline", "online", "disabled"] = "offline"
    """Weights & Biases' mode: "offline" writes the run under the run directory (`wandb sync` uploads it later), "online" logs to the server as the run goes."""
    wandb_project: Optional[str] = attrs.field(default=None, validator=Pattern(r".+", "a non-empty name"))
    """Weights & Biases project; left out, the experiment's name."""
    wandb_entity: Optional[str] = attrs.field(default=None, validator=Pattern(r".+", "a non-empty name"))
    """Weights & Biases entity (user or team); left out, W&B's default for the logged-in user."""
    mlflow_uri: Optional[str] = attrs.field(default=None, validator=Pattern(r".+", "a non-empty URI or path"))
    """MLflow tracking URI (a server, `sqlite:///path.db`, a directory); left out, `sqlite:///<out_dir>/mlflow.db`: one store for every run under out_dir, as `tensorboard --logdir <out_dir>` shows them all."""
    mlflow_experiment: Optional[str] = attrs.field(default=None, validator=Pattern(r".+", "a non-empty name"))
    """MLflow experiment; left out, the experiment's name."""
    samples: int = attrs.field(default=1, validator=at_least(0))
    """Text samples generated at each evaluation (text datasets only), shown in TensorBoard. In a job of several processes only at the last evaluation: the others would wait for rank 0's generation."""
    sample_tokens: int = attrs.field(default=200, validator=at_least(1))
    """Length of each such sample, in tokens."""

    @property
    def writes_tensorboard(self) -> bool:
        """Whether the run writes TensorBoard's event files: named in `trackers`, and `tensorboard` not false."""
        return self.tensorboard and "tensorboard" in self.trackers


@attrs.frozen(kw_only=True)
class EvaluationSpec:
    """Multiple-choice tasks scored while training (`nanogpt evaluate`'s scoring, on a fixed subset of each)."""

    tasks: tuple[str, ...] = attrs.field(default=(), validator=[Unique(), Each((Pattern(r"[A-Za-z0-9_.-]+", "a task name"),))])
    """Tasks to score (`nanogpt evaluate`'s names: "hellaswag", "arc_easy", "piqa", "winogrande", a plugin's); each rank scores its share. Logged as eval/<task>/acc and eval/<task>/acc_norm; the last figures go to the manifest's metrics."""
    interval: int = attrs.field(default=0, validator=at_least(0))
    """Score them every this many iterations and at the end; 0: at every evaluation (train.eval_interval)."""
    limit: int = attrs.field(default=500, validator=at_least(1))
    """Examples per task, drawn once with a fixed seed (the same in every run, so curves compare across runs)."""
    data_dir: str = ""
    """A folder of <task>.jsonl files holding each task's rows in its dataset's fields; empty: each task's Hugging Face dataset (cached after the first read)."""


@attrs.frozen(kw_only=True)
class Experiment:
    """One experiment: what to train, on what, how, and where its record goes."""

    name: str = attrs.field(validator=SAFE_NAME)
    """Name of the experiment; runs go to <logging.out_dir>/<name>/<run_id>/."""
    description: str = ""
    """What the experiment is for, in a sentence."""
    seed: int = attrs.field(default=1337, validator=[at_least(0), below(2**63)])
    """Seed of the weights' initialisation, the batch order and dropout."""
    plugins: tuple[str, ...] = attrs.field(default=(), validator=Each((MODULE,)))
    """Modules to import before the spec is read; they register their own kinds."""
    model: ModelSpec = attrs.field(factory=GPTSpec)
    """The model."""
    data: DataSpec = attrs.field(factory=TokensSpec)
    """The data."""
    optimizer: OptimizerSpec = attrs.field(factory=AdamWSpec)
    """The optimizer."""
    schedule: ScheduleSpec = attrs.field(factory=CosineSpec)
    """The learning-rate schedule."""
    train: TrainSpec = attrs.field(factory=TrainSpec)
    """The training loop."""
    system: SystemSpec = attrs.field(factory=SystemSpec)
    """Device, precision and compilation."""
    logging: LoggingSpec = attrs.field(factory=LoggingSpec)
    """Outputs."""
    evaluation: EvaluationSpec = attrs.field(factory=EvaluationSpec)
    """Downstream tasks scored during training."""

    def cross_checks(self) -> Iterator[Problem]:
        min_lr = getattr(self.schedule, "min_lr", None)
        lr = getattr(self.optimizer, "lr", None)
        if min_lr is not None and lr is not None:
            yield from _not_above("schedule.min_lr", min_lr, "optimizer.lr", lr)
        if isinstance(self.optimizer, MuonSpec) and self.system.parallel == "fsdp":
            # fsdp leaves each process a shard of rows; Newton-Schulz on a shard is not the
            # orthogonalised whole matrix, so the run would train differently from ddp's
            yield Problem("system.parallel", "'fsdp' cannot run optimizer.kind = 'muon' yet: Muon orthogonalises each "
                                             "whole weight matrix, and fsdp gives each process only a shard of it; use 'ddp'")
        # a micro-batch's inputs and targets alone are 16 bytes a token (int64), before any activation
        tokens = self.train.batch_size * getattr(self.model, "block_size", 1)
        if 16 * tokens > MAX_PROCESS_BYTES:
            yield Problem("train.batch_size", f"{self.train.batch_size} sequences of {tokens // self.train.batch_size} tokens "
                                              f"make a micro-batch whose token ids alone are {_bytes(16 * tokens)}, more than "
                                              f"any one machine holds ({_bytes(MAX_PROCESS_BYTES)})")

    @property
    def tokens_per_iter(self) -> int:
        """Tokens in one global batch (one optimizer step), whatever the number of processes."""
        return self.train.batch_size * self.train.grad_accum * getattr(self.model, "block_size", 0)


TABLES = ("model", "data", "optimizer", "schedule", "train", "system", "logging", "evaluation")
"""The tables of an experiment, in the order they are written."""
