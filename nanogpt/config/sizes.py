"""What a model's sizes come to: parameters and FLOPs, counted once for every part that needs them.

The models (`num_params`, `flops_per_token`), the runner's MFU, the manifest, `check`'s bound on
a model's size and the `scaling` verb all count through here; it imports neither torch nor
numpy. Three FLOPs accountings live here, each for what it is good at:

- `chinchilla_flops`: Chinchilla's Appendix F count of one training sequence (forward + backward),
  embeddings, attention logits and softmax included, as the seed's scaling notebook computes it.
- `flops_6nd`: the 6ND approximation (Kaplan et al.), which the Chinchilla loss fit assumes.
- `mfu_flops_per_token`: nanoGPT's / PaLM's count behind MFU, 6N + 12·L·H·Q·T (see its docstring).

Names follow the spec (`n_layer`, `n_head`, `n_embd`, `block_size`, `vocab_size`); the notebook
calls them num_layers, num_heads, d_model, seq_len and vocab_size. Chinchilla's loss fit is in
nanogpt/perf/laws.py."""

from __future__ import annotations

from typing import Any, Optional

import attrs


GPT2_VOCAB = 50257
"""GPT-2's BPE vocabulary (50,000 merges + 256 bytes + <|endoftext|>)."""

GPT_POSITIONS = ("learned", "rope")
GPT_NORMS = ("layernorm", "rmsnorm")
GPT_MLPS = ("gelu", "relu2", "swiglu")
"""The GPT kind's architecture options (GPT-2's first); nanogpt/models/gpt.py says what each one is."""


def gpt_mlp_hidden(n_embd: int, mlp: str = "gelu", ffw_size: int = 4) -> int:
    """Hidden width of a GPT's MLP: ffw_size·n_embd (GPT-2's 4·d) for "gelu" and "relu2"; for "swiglu"
    Llama's rule (`llama_intermediate_size`: 2/3 of 4·d rounded up to a multiple of 256), so that its
    three matrices hold about as many weights as GPT-2's two (768 -> 2048; 384 -> 1024)."""
    return llama_intermediate_size(n_embd) if mlp == "swiglu" else ffw_size * n_embd


def _gpt_block_parts(d: int, bias: bool, norm: str, mlp: str, ffw_size: int = 4) -> dict[str, int]:
    """One GPT block's parameters by what holds them: "matrices" (attention's and the MLP's), "biases", "norms"."""
    b = 1 if bias else 0
    h = gpt_mlp_hidden(d, mlp, ffw_size)
    up = 2 if mlp == "swiglu" else 1  # c_fc, and SwiGLU's c_gate
    return {
        "matrices": 3 * d * d + d * d + up * d * h + h * d,  # c_attn, attn.c_proj, c_fc (+ c_gate), mlp.c_proj
        "biases": b * (3 * d + d + up * h + d),
        "norms": 2 * _norm_params(d, bias, norm),  # ln_1, ln_2
    }


def _norm_params(d: int, bias: bool, norm: str) -> int:
    """A LayerNorm's weight (and bias); an RMSNorm has a weight only. qk_norm has no parameters."""
    return (2 if bias and norm == "layernorm" else 1) * d


# ------------------------------------------------------------------------------ parameters


def params(
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    vocab_size: int,
    bias: bool = True,
    ffw_size: int = 4,
    norm: str = "layernorm",
    mlp: str = "gelu",
    **_options: Any,
) -> int:
    """The notebook's parameter count: every parameter except the token and position embeddings.

    Counted: per block the attention's qkv and output projections, the MLP's two matrices, their
    biases and both LayerNorms; then the final LayerNorm and the output head (`vocab_size x n_embd`,
    no bias). This is N in the Chinchilla fit and in 6ND, and it is what nanoGPT's
    `get_num_params()` reports for a weight-tied model: there the head *is* the token embedding, so
    "all parameters minus the position table" equals this count. `bias=False` drops every Linear
    and LayerNorm bias. GPT-2 124M gives 123,653,376. `block_size` and `n_head` do not enter (they
    are taken so that every function here accepts the same sizes).

    The speedrun's options: `norm="rmsnorm"` norms hold a weight only (never a bias); `mlp="swiglu"`
    has a third matrix (c_gate) and the hidden width of `gpt_mlp_hidden`; "relu2", `position`,
    `qk_norm` (no gain), `logit_softcap` and `zero_init_residual` add no parameters here (the other
    options are accepted and ignored, so a config's `options()` can be passed whole).
    """
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    d = n_embd
    block = sum(_gpt_block_parts(d, bias, norm, mlp, ffw_size).values())
    ln_f = _norm_params(d, bias, norm)
    dense = d * vocab_size  # lm_head; no bias
    return n_layer * block + ln_f + dense


def embedding_params(
    *, n_embd: int, block_size: int, vocab_size: int, tie_weights: bool = True, position: str = "learned"
) -> int:
    """Parameters `params` leaves out: the position table (none with RoPE), and the token table when it is not tied to the head."""
    table = n_embd * block_size if position == "learned" else 0
    return table + (0 if tie_weights else n_embd * vocab_size)


def model_params(
    *,
    n_layer: int,
    n_head: int,
    n_embd: int,
    block_size: int,
    vocab_size: int,
    bias: bool = True,
    tie_weights: bool = True,
    position: str = "learned",
    **options: Any,
) -> int:
    """Every parameter the model holds, each shared tensor once (GPT-2 124M, tied: 124,439,808);
    `position` and `options` (norm, mlp, ...) as `params` and `embedding_params` take them."""
    return params(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size, bias=bias, **options
    ) + embedding_params(n_embd=n_embd, block_size=block_size, vocab_size=vocab_size, tie_weights=tie_weights, position=position)


def padded_vocab(vocab_size: int, multiple: int) -> int:
    """`vocab_size` rounded up to a multiple of `multiple` when that adds at most 1% rows, else unchanged.

    50257 -> 50304 with 64 (47 rows, 0.09%: the head's matmul gets GPU-friendly shapes); 65 -> 65
    (128 would nearly double the head for nothing).
    """
    if vocab_size < 1 or multiple < 1:
        raise ValueError(f"vocab_size ({vocab_size}) and multiple ({multiple}) must be at least 1")
    rounded = -(-vocab_size // multiple) * multiple
    return rounded if (rounded - vocab_size) * 100 <= vocab_size else vocab_size


def llama_intermediate_size(n_embd: int, multiple_of: int = 256) -> int:
    """The SwiGLU MLP's hidden width as Llama derives it: 2/3 of 4·n_embd, rounded up to `multiple_of`.

    Three matrices of width 8·d/3 hold as many weights as GPT's two of 4·d; Llama 7B: 4096 -> 11008.
    """
    hidden = int(2 * (4 * n_embd) / 3)
    return multiple_of * -(-hidden // multiple_of)


def llama_params(
    *, n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, vocab_size: int, **_: Any
) -> int:
    """A Llama's parameters by the same convention as `params`: all but the token embedding.

    Per block the q and o projections (d·d each), k and v (d·n_kv_head·head_size each), the SwiGLU
    MLP's gate, up and down matrices (3·d·intermediate_size) and two RMSNorm weights; then the final
    RMSNorm and the head (`vocab_size x n_embd`). No biases, no position table (RoPE has no
    weights), so with a tied head this is every parameter.
    """
    d = n_embd
    kv = 2 * d * n_kv_head * (d // n_head)
    block = 2 * d * d + kv + 3 * d * intermediate_size + 2 * d
    return n_layer * block + d + d * vocab_size


def gpt_role_params(
    *, n_layer: int, n_embd: int, block_size: int, padded_vocab_size: int | None, bias: bool = True,
    tie_weights: bool = True, position: str = "learned", norm: str = "layernorm", mlp: str = "gelu", **_: Any,
) -> dict[str, int | None]:
    """A GPT's parameters by their part (nanogpt.contracts.ROLES): "hidden", the blocks' matrices
    (four, five with SwiGLU); "embedding", the token and position tables (no position table with
    RoPE); "head", an untied lm_head; "other", the biases and norms' gains. Without a vocabulary
    (None), the parts that hold it are None."""
    d = n_embd
    rows = padded_vocab_size
    block = _gpt_block_parts(d, bias, norm, mlp)
    positions = block_size * d if position == "learned" else 0
    return {
        "hidden": n_layer * block["matrices"],
        "embedding": None if rows is None else rows * d + positions,
        "head": 0 if tie_weights else None if rows is None else rows * d,
        "other": n_layer * (block["biases"] + block["norms"]) + _norm_params(d, bias, norm),
    }


def llama_role_params(
    *, n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, vocab_size: int | None,
    tie_embeddings: bool = False, **_: Any,
) -> dict[str, int | None]:
    """A Llama's parameters by their part, as `gpt_role_params`: no biases, no position table, RMSNorm gains "other"."""
    d = n_embd
    kv = 2 * d * n_kv_head * (d // n_head)
    return {
        "hidden": n_layer * (2 * d * d + kv + 3 * d * intermediate_size),
        "embedding": None if vocab_size is None else vocab_size * d,
        "head": 0 if tie_embeddings else None if vocab_size is None else vocab_size * d,
        "other": n_layer * 2 * d + d,
    }


# ------------------------------------------------------------------------- a Llama's shape


@attrs.frozen(kw_only=True)
class LlamaConfig:
    """The sizes and switches that make a Llama: the model's config (nanogpt.models.llama), and the one
    description of a Llama's shape that the memory planner and the `scaling` verb read too."""

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

    @property
    def kv_width(self) -> int:
        """Width of the k and v projections: n_kv_head heads of n_embd / n_head."""
        return self.n_kv_head * self.head_size

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the token table and the head: a Llama's vocabulary is never padded."""
        return self.vocab_size

    def shape(self) -> dict[str, Any]:
        """This description's own fields and values (a subclass's extra fields left out)."""
        return {f.name: getattr(self, f.name) for f in attrs.fields(LlamaConfig)}

    def sizes(self, vocab_size: Optional[int] = None) -> dict[str, int]:
        """The sizes the counters here take (`llama_params`, `llama_chinchilla_flops`, ...)."""
        return dict(
            n_layer=self.n_layer, n_head=self.n_head, n_kv_head=self.n_kv_head, n_embd=self.n_embd,
            intermediate_size=self.intermediate_size, block_size=self.block_size,
            vocab_size=self.vocab_size if vocab_size is None else vocab_size,
        )

    @classmethod
    def from_spec(cls, spec: Any, vocab_size: int, **more: Any) -> LlamaConfig:
        """The config of a `[model] kind = "llama"` table for a vocabulary of `vocab_size` ids (`more`:
        a subclass's own fields)."""
        return cls(
            n_layer=spec.n_layer,
            n_head=spec.n_head,
            n_kv_head=spec.n_kv_head or spec.n_head,
            n_embd=spec.n_embd,
            intermediate_size=spec.intermediate_size or llama_intermediate_size(spec.n_embd),
            block_size=spec.block_size,
            vocab_size=vocab_size,
            rope_theta=spec.rope_theta,
            norm_eps=spec.norm_eps,
            tie_embeddings=spec.tie_embeddings,
            dropout=spec.dropout,
            **more,
        )


# ----------------------------------------------------------------------------------- FLOPs


def chinchilla_flops(
    *, n_layer: int, n_head: int, n_embd: int, block_size: int, vocab_size: int, ffw_size: int = 4,
    mlp_matrices: int = 2,
) -> int:
    """Training FLOPs of one sequence of `block_size` tokens (forward + backward), Chinchilla Appendix F.

    As the notebook counts: embeddings 2·T·V·d; per layer the qkv projections, the attention logits
    (2·T²·d), the softmax (3·H·T²), the reduction over values (2·T²·d), the output projection and
    the MLP, 2·T·(d·ffw_size + d·ffw_size); the logits 2·T·d·V; backward = 2 x forward (Kaplan et
    al.). Biases and LayerNorms are not counted. GPT-2 124M: 766,006,788,096 per 1024-token sequence.

    Mind `ffw_size`: Appendix F means the MLP's hidden width (4·d_model), but the notebook passes the
    multiplier 4, so its MLP term is d_model times too small, which is one reason its numbers sit
    "off by a bit" from the paper's. The default keeps the notebook's figures; pass
    `ffw_size=4 * n_embd` to count the MLP at its real width (GPT-2 124M: 1,113,446,154,240).
    `mlp_matrices=3` counts a SwiGLU MLP (gate, up, down), 2·T·3·d·ffw_size.
    """
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    T, d, V, H = block_size, n_embd, vocab_size, n_head
    key_size = d // H
    embeddings = 2 * T * V * d
    attention = 2 * 3 * T * d * (key_size * H)  # key, query, value projections
    attlogits = 2 * T * T * (key_size * H)  # key @ query
    attsoftmax = 3 * H * T * T  # the notebook's "TODO why?": exp, sum and divide, per logit
    attvalue = 2 * T * T * (key_size * H)  # softmax @ value
    attlinear = 2 * T * (key_size * H) * d
    att = attention + attlogits + attsoftmax + attvalue + attlinear
    dense = 2 * T * mlp_matrices * d * ffw_size
    logits = 2 * T * d * V
    forward = embeddings + n_layer * (att + dense) + logits
    return 3 * forward  # forward + backward (2 x forward)


def llama_chinchilla_flops(
    *, n_layer: int, n_head: int, n_kv_head: int, n_embd: int, intermediate_size: int, block_size: int, vocab_size: int
) -> int:
    """Training FLOPs of one sequence of a Llama (forward + backward), Chinchilla Appendix F at the
    model's real widths: `chinchilla_flops`' terms with k and v projected to n_kv_head heads and the
    SwiGLU MLP's three matrices (2·T·3·d·intermediate_size); RMSNorms and RoPE are not counted, as
    LayerNorms are not."""
    _check_sizes(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size)
    T, d, V, H = block_size, n_embd, vocab_size, n_head
    kv = n_kv_head * (d // H)
    embeddings = 2 * T * V * d
    attention = 2 * T * d * (d + 2 * kv)  # query, key, value projections
    att = attention + 2 * T * T * d + 3 * H * T * T + 2 * T * T * d + 2 * T * d * d  # logits, softmax, values, o_proj
    dense = 2 * T * 3 * d * intermediate_size
    logits = 2 * T * d * V
    return 3 * (embeddings + n_layer * (att + dense) + logits)


def flops_6nd(n_params: float, tokens: float) -> float:
    """Training FLOPs by the 6ND approximation: 2ND forward, 4ND backward."""
    return 6 * n_params * tokens


def mfu_flops_per_token(*, n_params: int, n_layer: int, n_head: int, n_embd: int, block_size: int) -> int:
    """Training FLOPs per token as nanoGPT's `estimate_mfu` and PaLM (Appendix B) count them.

        flops_per_token = 6·N + 12·L·H·Q·T

    N is the model's non-embedding parameter count (`GPT.num_params()`, which equals `params` at
    the model's padded vocabulary: every weight but the position table, the tied head included),
    L = n_layer, H = n_head, Q = n_embd / n_head (so H·Q = n_embd), T = block_size: each token's
    attention is charged for a full context of T positions, as nanoGPT does. 6N is a matmul's
    multiply-add (2) times forward + backward (1 + 2); 12·L·H·Q·T is the attention scores and the
    weighted sum of values, forward and backward. MFU is this times tokens per second, divided by
    the device's peak FLOP/s (`mfu`).
    """
    return 6 * n_params + 12 * n_layer * n_embd * block_size


def mfu(flops_per_token: float, tokens_per_sec: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s by `mfu_flops_per_token` over the peak FLOP/s (both per device or both in all)."""
    if peak_flops <= 0:
        raise ValueError(f"peak_flops must be above 0 (got {peak_flops!r})")
    return flops_per_token * tokens_per_sec / peak_flops


# ---------------------------------------------------------------------- Chinchilla's fit


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer (got {value!r})")
    if sizes["n_embd"] % sizes["n_head"]:
        raise ValueError(f"n_embd ({sizes['n_embd']}) must be divisible by n_head ({sizes['n_head']})")


# ------------------------------------------------------------------------------ the verb


